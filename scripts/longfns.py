#!/usr/bin/env python3
"""Lists functions longer than a limit (default 80 lines), tests excluded.

A function runs from its `fn` line to the line that closes its body at the same indent.
Usage: scripts/longfns.py [--max N] DIR...
"""
import os, re, sys

args = sys.argv[1:]
limit = 80
if args[:1] == ['--max']:
    limit, args = int(args[1]), args[2:]
FN = re.compile(r'^(\s*)(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)')
long = []
for root in args:
    for dirpath, _, files in os.walk(root):
        if '/target' in dirpath or dirpath.endswith('/tests') or '/tests/' in dirpath + '/' and 'tests/src' not in dirpath:
            continue
        for f in files:
            if not f.endswith('.rs'):
                continue
            path = os.path.join(dirpath, f)
            lines = open(path).read().split('\n')
            # Unit tests at the end of a file are not product code.
            for i, l in enumerate(lines):
                if l.startswith('#[cfg(test)]'):
                    lines = lines[:i]
                    break
            for i, l in enumerate(lines):
                m = FN.match(l)
                if not m or l.rstrip().endswith(';'):
                    continue
                indent = m.group(1)
                for j in range(i + 1, len(lines)):
                    if lines[j] == indent + '}' or (lines[j].startswith(indent + '}') and len(lines[j].strip()) <= 2):
                        n = j - i + 1
                        if n > limit:
                            long.append((n, f'{path}:{i + 1}', m.group(7)))
                        break
for n, where, name in sorted(long, reverse=True):
    print(f'{n:4} {where} {name}')
sys.exit(1 if long else 0)
