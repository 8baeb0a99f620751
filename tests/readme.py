"""The README's shell commands, read from README.md itself: the tests and .ci/run run what it says.

Standard library only, so that .ci/run can call it before anything is installed:
``python3 tests/readme.py WORD ...`` prints the first command that holds every word.
"""

import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(readme=README):
    """Every command of the README's ```bash blocks, in order: continuation lines joined, comments
    dropped. The tests and .ci/run take the commands from here, so they follow the README."""
    commands, in_block, pending = [], False, ""
    for line in Path(readme).read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```bash" and not in_block
            continue
        if not in_block:
            continue
        line = pending + line.split("  #")[0].strip()
        if line.endswith("\\"):
            pending = line[:-1].strip() + " "
            continue
        pending = ""
        if line:
            commands.append(line)
    return commands


def readme_command(*words, readme=README):
    """The README's first command that holds all of ``words``."""
    found = [command for command in readme_commands(readme) if all(word in command for word in words)]
    if not found:
        raise LookupError(f"No command in {readme} holds all of {words}.")
    return found[0]


if __name__ == "__main__":
    print(readme_command(*sys.argv[1:]))
