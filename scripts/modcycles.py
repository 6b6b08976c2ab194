#!/usr/bin/env python3
"""Fails when a crate's top-level modules depend on each other in a cycle.

An edge a -> b is any `crate::b` path (or `crate::{b, ...}` group) in module a's files, outside
comments and its `#[cfg(test)] mod tests` (tests may reach anything). Usage:
    scripts/modcycles.py src bridge/src services/src
"""
import os, re, sys
from itertools import chain

def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith('.rs'): continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ('mod', 'lib', 'main'): rel = rel[:-1]
            mods[path] = rel
    return mods

def top(rel):
    return rel[0] if rel else None

def group_heads(text, i):
    """The first segment of every path at depth 0 of the `{...}` group starting at text[i]."""
    depth, item, heads = 0, '', []
    while i < len(text):
        c = text[i]
        if c == '{': depth += 1
        elif c == '}':
            if depth == 0: break
            depth -= 1
        if depth == 0 and c == ',':
            heads.append(item); item = ''
        elif depth == 0 and c != '}':
            item += c
        i += 1
    heads.append(item)
    return [h.strip().split('::')[0].strip() for h in heads if h.strip()]

def edges(src):
    g = {}
    for path, rel in modules(src).items():
        me = top(rel)
        if me is None or me == 'bin': continue
        text = open(path).read()
        text = re.sub(r'//[^\n]*', '', text)
        # strip #[cfg(test)] mod tests { ... } at end of file (tests may use anything)
        i = text.find('#[cfg(test)]\nmod tests')
        if i >= 0: text = text[:i]
        g.setdefault(me, set())
        for m in re.finditer(r'\bcrate::(\w+)', text):
            if m.group(1) != me: g[me].add(m.group(1))
        # use crate::{a, b::c}
        for m in re.finditer(r'crate::\{', text):
            for name in group_heads(text, m.end()):
                if name != me: g[me].add(name)
    names = set(g)
    return {k: {v for v in vs if v in names} for k, vs in g.items()}

def sccs(g):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
        for w in g.get(v, ()):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(g):
        if v not in index: visit(v)
    return out

bad = 0
for src in sys.argv[1:]:
    for c in sccs(edges(src)):
        bad += 1
        print(f"{src}: cycle among {{{', '.join(c)}}}")
sys.exit(1 if bad else 0)
