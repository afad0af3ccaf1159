"""``python -m ari_app.cli``: the same as ``ari-app``."""

from ari_app.cli import main

raise SystemExit(main())
