"""The site's generated pages (`tools/render_site.py`): the dashboard, run, gate, comparison and lineage
pages under docs/reference/, written as Markdown with inline HTML from the spec and the evidence."""
