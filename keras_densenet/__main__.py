import sys

from keras_densenet.cli import main

sys.exit(main())
