#!/usr/bin/env python3
"""Fails when the tree holds what does not belong in source control.

Every file git tracks must be text (no NUL byte: binaries such as wheels, archives, images and
build output come from their registries or from the build, never from the tree), at most 512 KiB,
and outside the folders tests and builds write to (target/, tests/artifacts/, node_modules/,
fuzz corpora). Usage: scripts/tidy.py
"""
import subprocess, sys

MAX_BYTES = 512 * 1024
WRITTEN = ('target/', 'tests/artifacts/', 'node_modules/', 'fuzz/corpus/', 'fuzz/artifacts/')

def problems(path):
    if any(path.startswith(w) or f'/{w}' in path for w in WRITTEN):
        yield 'lies in a folder tests or builds write to'
        return
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return  # deleted in the working tree, not yet in the index
    if len(data) > MAX_BYTES:
        yield f'is over {MAX_BYTES // 1024} KiB'
    if b'\0' in data:
        yield 'is binary'

def main():
    files = subprocess.run(['git', 'ls-files', '-z'], capture_output=True, check=True).stdout.decode().split('\0')
    bad = [f'{path}: {why}' for path in files if path for why in problems(path)]
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0

if __name__ == '__main__':
    sys.exit(main())
