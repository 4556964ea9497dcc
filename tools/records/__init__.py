"""What writes or retires records: the tests' current records (`make fixtures`), the GPU check's record
(`make gpu-check`), retirement (`tools/retire.py`), and scratch repositories for the checker's tests
and benchmark."""
