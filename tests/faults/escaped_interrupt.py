"""``python -m tests.faults.escaped_interrupt kseg|webcam``: ``kseg data check`` or ``apps.webcam``
where a Ctrl-C first escaped a ``PyRun_*`` call and was caught later, as when it lands in the import
of TensorFlow or LiteRT (pybind11 ``exec``); the command ends "interrupted". CPython would then end
the process by SIGINT, not with the 130 the command returned."""

import ctypes
import sys


def ctrl_c_through_pyrun(*args, **kwargs):
    run = ctypes.pythonapi.PyRun_String
    run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
    run.restype = ctypes.py_object
    run(b"raise KeyboardInterrupt", 257, {}, {})  # 257: Py_file_input; the KeyboardInterrupt propagates


if sys.argv[1] == "kseg":
    from kseg.cli import data, main

    data.run_check = ctrl_c_through_pyrun
    sys.argv = ["kseg", "data", "check", "anything", "--format", "masks"]
else:
    import apps.webcam
    from apps.webcam import main

    apps.webcam.run = ctrl_c_through_pyrun
    sys.argv = ["webcam", "--source", "anything.mp4", "--no-window"]
raise SystemExit(main())
