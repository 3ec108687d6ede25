"""Names that explain themselves: the settled spellings of the API and the CLI (issue: trusted
adaptation, §3). Each test fails on the spellings they replaced."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from ase.build import molecule

from ase_adapt import AdaptiveCalculator, MLFFCalculator
from ase_adapt import _keys as K
from ase_adapt.adapt import AdaptMode, AdaptSettings
from ase_adapt.adapt.ttt import TTTSettings, test_time_train
from ase_adapt.labels import frame_labels
from ase_adapt.priors.base import Prior
from ase_adapt.shift.detectors import DetectorSettings
from ase_adapt.shift.radius import RadiusSettings
from ase_adapt.shift.spectrum import SpectrumMethod
from ase_adapt.testing import toy_prior

from conftest import fast_ttt


def test_calculator_settings_are_named_as_settings(ready):
    calc = AdaptiveCalculator(ready, toy_prior(), prior_head="prior", adapt_when="always",
                              radius_refinement=True, ttt=fast_ttt())
    s = calc.settings
    assert isinstance(s, AdaptSettings) and s.when is AdaptMode.ALWAYS
    assert isinstance(s.detectors, DetectorSettings) and isinstance(s.radius, RadiusSettings)
    assert isinstance(s.ttt, TTTSettings) and s.prior_head == calc.prior_head == "prior"
    for old in ("rr", "ttt", "detectors", "adapt"):
        assert not hasattr(calc, old), old


def test_old_or_misspelt_keywords_are_refused_not_swallowed(ready):
    with pytest.raises(TypeError, match="adapt"):  # ASE's Calculator would keep it as a parameter
        AdaptiveCalculator(ready, toy_prior(), prior_head="prior", adapt="always")
    with pytest.raises(TypeError, match="heads"):
        MLFFCalculator(ready, heads="main")


def test_radius_is_the_graph_radius_in_use(ready):
    atoms = molecule("CH3CH2OH")
    plain = AdaptiveCalculator(ready, toy_prior(), prior_head="prior", ttt=False, adapt_when="never")
    atoms.calc = plain
    atoms.get_potential_energy()
    assert plain.radius == ready.cutoff  # not None: the model's cutoff is in use
    refined = AdaptiveCalculator(ready, toy_prior(), prior_head="prior", ttt=False, adapt_when="always",
                                 radius_refinement=True)
    atoms.calc = refined
    atoms.get_potential_energy()
    assert refined.radius == min(refined.shift_report.radius, ready.cutoff)


def test_spectrum_method_is_its_enum():
    for settings in (DetectorSettings(spectrum_method="dense"), RadiusSettings(spectrum_method="dense")):
        assert settings.spectrum_method is SpectrumMethod.DENSE
    with pytest.raises(ValueError):
        DetectorSettings(spectrum_method="exact")


def test_ttt_settings_name_what_is_adapted(ready):
    s = TTTSettings(adapted_blocks=2, max_steps=1, md_steps=0, guard=None)
    assert s.adapted_blocks == 2 and not hasattr(s, "blocks")
    with pytest.raises(ValueError, match="adapted_blocks"):
        TTTSettings(adapted_blocks=-1)
    assert test_time_train.__test__ is False


def test_prior_says_why_it_cannot_run():
    atoms = molecule("H2O")
    atoms.positions[0, 0] = np.nan
    from ase_adapt.priors import make_prior

    prior = make_prior("lj")
    assert isinstance(prior, Prior) and not hasattr(prior, "check")
    assert "non-finite" in prior.unusable_reason(atoms)
    assert prior.unusable_reason(molecule("H2O")) is None


def test_label_dicts_use_label_keys_whoever_labelled():
    atoms = molecule("H2O")
    atoms.info["prior_energy"] = 1.0
    atoms.arrays["prior_forces"] = np.zeros((3, 3))
    labels = frame_labels(atoms, 0, "prior_energy", "prior_forces")
    assert set(labels) == {K.LABEL_ENERGY, K.LABEL_FORCES, K.LABEL_STRESS} and labels[K.LABEL_ENERGY] == 1.0


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from ase_adapt.cli.main import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str):
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_cli_spellings_are_one_convention():
    commands = _subparsers()
    # --model is always a checkpoint; train takes an architecture as --arch
    assert _option(commands["train"], "--model") is None and _option(commands["train"], "--arch") is not None
    info = commands["info"]
    assert _option(info, "--model") is not None and not any(not a.option_strings for a in info._actions)
    # --json always takes a path
    for name, parser in commands.items():
        js = _option(parser, "--json")
        if js is not None:
            assert js.nargs is None and not isinstance(js, argparse._StoreTrueAction), name
    # --quiet means one thing everywhere: no progress bars
    quiet = {name: _option(p, "--quiet") for name, p in commands.items() if _option(p, "--quiet")}
    assert len(quiet) >= 5
    assert {(a.dest, a.default, a.help) for a in quiet.values()} == {("progress", None, quiet["train"].help)}
    # e0: the calculator and the output are named as elsewhere
    e0 = commands["e0"]
    assert _option(e0, "--calc") is None and _option(e0, "--write-to") is None
    assert _option(e0, "--calculator") is not None and _option(e0, "--out") is not None
