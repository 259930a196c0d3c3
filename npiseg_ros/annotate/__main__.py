import sys

from npiseg_ros.annotate.cli import main

sys.exit(main())
