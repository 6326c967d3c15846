"""``python -m keras_densenet``: the ``keras-densenet`` command.

Example::

    python -m keras_densenet train --epochs 3
"""

import sys

from keras_densenet.cli import main

sys.exit(main())
