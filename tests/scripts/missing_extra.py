"""Child process of tests/test_cli.py (test_missing_extra_in_the_library_names_it),
run with a package of the [train] extra hidden (tests/hide_modules): loads
the bundled digits dataset through the library and prints
``<exception type> <message>`` of the ImportError it raises (nothing if it
loads).
"""

from keras_densenet.data import datasets as data

if __name__ == "__main__":
    try:
        data.load_digits_dataset()
    except ImportError as e:
        print(type(e).__name__, e)
