"""``python -m recorder``: the ``qwen-record`` command line."""

from recorder.cli import main

if __name__ == "__main__":
    main()
