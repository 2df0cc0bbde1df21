import sys

from geventchat.client.cli import main

sys.exit(main())
