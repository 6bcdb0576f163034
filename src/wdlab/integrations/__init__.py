"""wdlab inside other libraries' training loops.

Each integration lives in its own module and imports its library only there, so ``import
wdlab`` never imports them: :mod:`wdlab.integrations.lightning` (``pip install
'wdlab[lightning]'``).
"""
