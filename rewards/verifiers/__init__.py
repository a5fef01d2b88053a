"""Task verifiers: reply text + the row's meta -> reward parts (official definitions, rewards/README.md).

  sudoku.py, countdown.py, gsm8k.py   the paper's tasks
  math_answer.py                      MATH answers through math-verify (in `math_child.py` processes, `childpool.py`)
  coding.py                           code tests through the sandbox (rewards/sandbox/)
  text.py                             shared text helpers (answer tags, meta checks)
"""
