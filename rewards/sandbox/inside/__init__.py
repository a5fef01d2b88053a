"""Source run INSIDE the sandbox: `plain.py` (plain-data encoding) followed by `program.py` (the program's process)
or `checker.py` (the checker), read by path (rewards/sandbox/checkers.py::in_sandbox_source) and run with
`python3 -I -S -B -c`. The in-sandbox interpreter cannot import the project, so the host never imports these."""
