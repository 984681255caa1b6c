import sys

try:
    from peftlab.cli import main
except KeyboardInterrupt:  # Ctrl-C while torch and transformers are still being imported
    print("peftlab: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
