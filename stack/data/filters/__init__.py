"""Document filters of `stack prepare`: one module per family, a runner, settings as data, and their gates.

| module    | drops                                                 | reason(s)                              |
|-----------|-------------------------------------------------------|----------------------------------------|
| leak      | a leaked system prompt in the head region             | leak_phrase, leak_headers, leak_weight |
| size      | a separated document or record longer than max_bytes  | oversize                               |
| diversity | a first window that repeats itself (zlib ratio)       | low_diversity                          |
| script    | a first window mostly outside its source's scripts    | script_mismatch                        |
| dedup     | an exact or near duplicate of an earlier document     | dedup_exact, dedup_near                |

Settings: stack/data/filters/defaults.yaml, a user's --filters FILE over it (settings.py).
canaries.py plants the documents that prove each filter ran over each source; droplog.py keeps
one line per dropped document; report.py words the drops, the warnings and the refusals.
"""
