import sys

from bpm_doctor.cli import main

sys.exit(main())
