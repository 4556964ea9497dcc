"""Document filters of `stack prepare`: one module per family, a runner, settings as data, and their gates.

| module    | drops                                         | reason(s)                              |
|-----------|-----------------------------------------------|----------------------------------------|
| leak      | a system prompt in a chat's first user turn   | leak_phrase, leak_headers, leak_weight |
| size      | a separated document or record over max_bytes | oversize                               |
| encoding  | a sample mostly U+FFFD (a wrong encoding)     | mis_encoded                            |
| diversity | a first window that repeats itself            | low_diversity                          |
| script    | the few documents off their source's system   | script_mismatch                        |
| dedup     | an exact or near duplicate of an earlier one  | dedup_exact, dedup_near                |

Settings: stack/data/filters/defaults.yaml, a user's --filters FILE over it (settings.py).
canaries.py plants the documents that prove each filter ran over each source; sample.py reads the
stretches of a document that encoding and script judge; droplog.py keeps one line per dropped
document; report.py words the drops, the warnings and the refusals.
"""
