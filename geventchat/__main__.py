"""``python -m geventchat``: the terminal client, as ``python -m geventchat.client``."""

import sys

from geventchat.client.cli import main

sys.exit(main())
