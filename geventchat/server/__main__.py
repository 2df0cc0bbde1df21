import sys

from geventchat.server.app import main

sys.exit(main())
