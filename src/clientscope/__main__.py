"""`python -m clientscope`: the same command as the `clientscope` script."""

from clientscope.cli import main

if __name__ == "__main__":
    main()
