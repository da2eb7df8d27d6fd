"""lotto_engine: lottery-ticket pruning experiments as a library.

Typed configuration (:mod:`lotto_engine.config`), datasets (:mod:`.data`), models
(:mod:`.models`), pruning masks (:mod:`.pruning`), metrics (:mod:`.metrics`), the
training protocol (:mod:`.training`), a plan of jobs (:mod:`.plan`), a runner that
emits typed events (:mod:`.runner`, :mod:`.events`) and a SQLite store
(:mod:`.store`). It never imports a UI library; importing this package does not
import torch (submodules that need it do).
"""

__version__ = "0.1.0"
