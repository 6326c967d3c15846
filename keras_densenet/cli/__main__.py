"""``python -m keras_densenet.cli``: the ``keras-densenet`` command.

Example::

    python -m keras_densenet.cli --backend jax table
"""

import sys

from keras_densenet.cli import main

sys.exit(main())
