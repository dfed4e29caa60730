"""The training-step benchmark (also ``nnlab bench``): see :mod:`nnlab.benchmark`.

    python benchmarks/bench_train_step.py [--quick] [--configs tiny,mnist,deep-narrow,wide]
        [--optimizers sgd-momentum,adam] [--repeat N] [--json out.json] [--skip SECTIONS]
        [--wait-quiet SECONDS]
    python benchmarks/bench_train_step.py --report out.json      # re-print a saved run's tables
"""

import sys

from nnlab.benchmark import main

if __name__ == "__main__":
    main(sys.argv[1:])
