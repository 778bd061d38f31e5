"""``python -m tests.faults.escaped_interrupt``: ``kseg data check`` where a Ctrl-C first escaped a
``PyRun_*`` call and was caught later, as when it lands in TensorFlow's import (pybind11 ``exec``);
the command ends "interrupted". CPython would then end the process by SIGINT, not with kseg's 130."""

import ctypes
import sys

from kseg.cli import data, main


def run_check(args):
    run = ctypes.pythonapi.PyRun_String
    run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
    run.restype = ctypes.py_object
    run(b"raise KeyboardInterrupt", 257, {}, {})  # 257: Py_file_input; the KeyboardInterrupt reaches main()


data.run_check = run_check
sys.argv = ["kseg", "data", "check", "anything", "--format", "masks"]
raise SystemExit(main())
