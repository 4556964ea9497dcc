"""Document filters of `stack prepare`: one module per family, a runner, settings as data, and their gates.

| module    | drops                                                 | reason(s)                              |
|-----------|-------------------------------------------------------|----------------------------------------|
| leak      | a leaked system prompt in the head region             | leak_phrase, leak_headers, leak_weight |
| size      | a document longer than max_bytes                      | oversize                               |
| diversity | a first window of low n-gram diversity                | low_diversity                          |
| script    | a first window mostly outside the expected scripts    | script_mismatch                        |
| dedup     | an exact or near duplicate of an earlier document     | dedup_exact, dedup_near                |

Settings: stack/data/filters/defaults.yaml, a user's --filters FILE over it (settings.py).
"""
