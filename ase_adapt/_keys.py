"""Key constants for results, graph fields and the checkpoint format.

They become part of the saved format and of the public results dictionary, so they are spelled
once, here.
"""

from __future__ import annotations

# model outputs
ENERGY = "energy"
NODE_ENERGY = "node_energy"
FORCES = "forces"
STRESS = "stress"

# reference labels in a dataset (atoms.info / atoms.arrays; ASE single-point results are read too)
REF_ENERGY = "energy"
REF_FORCES = "forces"
REF_STRESS = "stress"
# one structure's labels as a dict (labels.frame_labels, losses.make_targets, a prior's label()):
# the same keys whoever labelled it, the reference or a prior
LABEL_ENERGY = "energy"
LABEL_FORCES = "forces"
LABEL_STRESS = "stress"
PRIOR_ENERGY = "prior_energy"
PRIOR_FORCES = "prior_forces"
PRIOR_STRESS = "prior_stress"
CONFIG_TYPE = "config_type"
ISOLATED_ATOM = "IsolatedAtom"

# heads
MAIN_HEAD = "main"
PRIOR_HEAD = "prior"

# checkpoint format
FORMAT_NAME = "ase-adapt"
FORMAT_VERSION = 2  # 2: heads saved under identifier keys (models/heads.py); 1 still loads
META_FORMAT = "format"
META_VERSION = "format_version"
META_CONFIG = "config"
META_HEADS = "heads"
META_STATS = "training_stats"
STATE_PREFIX = "model."
STATS_PREFIX = "stats."
