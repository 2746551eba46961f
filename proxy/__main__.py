"""``python -m proxy`` runs the ``qwen-proxy`` command line."""

from proxy.cli import main

main()
