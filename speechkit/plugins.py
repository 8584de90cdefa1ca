"""``speechkit-plugins``: every registered plugin, by kind, with its parameters and defaults."""

from __future__ import annotations

import sys


def main() -> None:
    from speechkit.registry import PluginError, describe

    try:
        print(describe())
    except PluginError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
