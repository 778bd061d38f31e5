import sys

try:
    from kseg.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python is still importing
    print("kseg: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
