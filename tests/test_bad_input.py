"""Bad input never gives a silent wrong result: each finding of the bad-input review, as a test
that fails on the code before the fix. The CLI's share is in ``test_cli_bad_input.py``."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from ase.build import molecule

import ase_adapt
from ase_adapt import AdaptiveCalculator, MLFFCalculator
from ase_adapt.adapt.trigger import system_fingerprint
from ase_adapt.adapt.ttt import TTTSettings
from ase_adapt.errors import CalculationFailed, UnknownElementError
from ase_adapt.testing import toy_prior

from conftest import fast_ttt


def _adaptive(model, **kw):
    return AdaptiveCalculator(copy.deepcopy(model), toy_prior(), prior_head="prior", adapt_when="always",
                              ttt=fast_ttt(), **kw)


# ------------------------------------------------------------------ structures
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_positions_fail_clearly_and_leave_nothing_behind(ready, bad):
    calc = _adaptive(ready)
    atoms = molecule("CH3CH2OH")
    atoms.positions[2, 1] = bad
    atoms.calc = calc
    with pytest.raises(CalculationFailed, match="NaN or inf"):
        atoms.get_potential_energy()
    with pytest.raises(CalculationFailed, match="NaN or inf"):
        calc.check(atoms)
    assert calc.events == [] and calc.state is None  # nothing was detected, adapted or cached
    good = molecule("CH3CH2OH")
    good.calc = calc
    assert np.isfinite(good.get_potential_energy())


def test_coordinates_far_from_the_origin_keep_float32_precision(model32):
    atoms = molecule("CH3CH2OH")
    atoms.calc = MLFFCalculator(model32)
    near = atoms.get_forces().copy()
    far = atoms.copy()
    far.translate([1e4, -2e4, 3e4])
    far.calc = MLFFCalculator(model32)
    np.testing.assert_allclose(far.get_forces(), near, atol=1e-5)


@pytest.mark.parametrize("cutoff", [float("nan"), float("inf"), 0.0, -1.0, 1e6])
def test_absurd_cutoffs_are_refused(cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        ase_adapt.build_model(elements=("H",), cutoff=cutoff, channels=4, num_layers=1)


@pytest.mark.parametrize("formula", ["UO2", "NaH", "LiH"])
def test_nearest_policy_refuses_elements_with_no_close_stand_in(model32, formula):
    from ase import Atoms

    atoms = Atoms(formula, positions=np.arange(3 * len(Atoms(formula))).reshape(-1, 3) * 0.7)
    atoms.calc = MLFFCalculator(model32, unknown_elements="nearest")
    with pytest.raises(UnknownElementError, match="close enough"):
        atoms.get_potential_energy()


# ------------------------------------------------------------------ settings at construction
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "bfloat16", "float16", "double"])
def test_half_and_unknown_precisions_are_refused(model32, dtype):
    with pytest.raises(ValueError, match="dtype"):
        MLFFCalculator(model32, dtype=dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_refused_at_construction(model32):
    with pytest.raises(ValueError, match="no CUDA device"):
        MLFFCalculator(model32, device="cuda")


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(lr="0.01"), TypeError, "lr"),
    (dict(max_steps=10.5), TypeError, "max_steps"),
    (dict(md_stride=0), ValueError, "md_stride"),
    (dict(rattle_std=-0.1), ValueError, "rattle_std"),
    (dict(momentum=1.0), ValueError, "momentum"),
    (dict(guard={"max_move_ratio": "big"}), TypeError, "max_move_ratio"),
])
def test_ttt_settings_of_the_wrong_type_or_range_name_the_field(kwargs, error, name):
    with pytest.raises(error, match=name):
        TTTSettings(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(ttt={"lr": 0.01}), TypeError, "ttt must be a TTTSettings"),
    (dict(detectors="yes"), TypeError, "detectors"),
    (dict(cache_size=-1), ValueError, "cache_size"),
    (dict(prior=42), TypeError, "prior must be"),
    (dict(adapt_when="sometimes"), ValueError, "sometimes"),
])
def test_adaptive_calculator_refuses_bad_settings_before_any_work(ready, kwargs, error, match, count_calls):
    kw = {"prior": toy_prior(), "prior_head": "prior", **kwargs}
    with pytest.raises(error, match=match):
        AdaptiveCalculator(ready, **kw)


# ------------------------------------------------------------------ charge and spin
def test_charge_and_spin_are_part_of_the_system(ready):
    atoms = molecule("CH3CH2OH")
    cation = atoms.copy()
    cation.info.update(charge=1, spin=2)
    calc = _adaptive(ready)
    bonds = calc._trigger.bonds(atoms)
    assert system_fingerprint(atoms, bonds) != system_fingerprint(cation, bonds)
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.info.update(charge=1, spin=2)  # same geometry, now a cation: a new check, not the cache
    with pytest.warns(UserWarning, match="takes no charge"):
        atoms.get_potential_energy()
    assert len(calc.events) == 2 and calc.events[1]["kind"] != "reused"


def test_priors_without_electrons_refuse_a_charged_system():
    from ase_adapt.errors import PriorError
    from ase_adapt.priors import make_prior

    atoms = molecule("H2O")
    atoms.info["charge"] = -1
    with pytest.raises(PriorError, match="cannot model a charged"):
        make_prior("lj").label(atoms)
    atoms.info["charge"] = 0.5
    with pytest.raises(PriorError, match="integer total charge"):
        make_prior("lj").label(atoms)


@pytest.mark.parametrize("spec", ["gfn2-xtb", "gfn-ff"])
def test_charge_reaches_the_electronic_priors(spec):
    from ase_adapt.priors import make_prior

    prior = make_prior(spec)
    neutral = molecule("H2O")
    anion = neutral.copy()
    anion.info["charge"] = -1
    if spec == "gfn2-xtb":
        anion.info["spin"] = 2
    e_neutral, e_anion = prior.label(neutral)["energy"], prior.label(anion)["energy"]
    assert abs(e_anion - e_neutral) > 0.5  # eV: an electron more is no small change
    assert prior.label(neutral)["energy"] == pytest.approx(e_neutral)  # the cache saw the change back


def test_the_model_warns_once_that_it_takes_no_charge(model32):
    atoms = molecule("H2O")
    atoms.info["charge"] = 1
    atoms.calc = MLFFCalculator(model32)
    with pytest.warns(UserWarning, match="takes no charge"):
        atoms.get_potential_energy()
    atoms.positions[0, 0] += 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.get_potential_energy()  # the same system again: said once


# ------------------------------------------------------------------ TTT's inputs
def test_ttt_checks_its_inputs_before_any_step(ready):
    from ase_adapt.adapt.samples import make_samples
    from ase_adapt.adapt.ttt import test_time_train
    from ase_adapt.errors import PriorError

    atoms = molecule("CH3CH2OH")
    s = TTTSettings(max_steps=5, md_steps=0, guard=None)
    samples, labels = make_samples(atoms, s.sample_settings(), toy_prior())
    model = copy.deepcopy(ready)
    before = [p.detach().clone() for p in model.parameters()]
    bad = [dict(lab) for lab in labels]
    bad[2]["forces"] = bad[2]["forces"].copy()
    bad[2]["forces"][0, 0] = np.nan
    with pytest.raises(PriorError, match="sample 2"):
        test_time_train(model, atoms, toy_prior(), s, head="prior", samples=samples, labels=bad)
    with pytest.raises(ValueError, match="one label per sample"):
        test_time_train(model, atoms, toy_prior(), s, head="prior", samples=samples, labels=labels[:-1])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite weights"):
        test_time_train(model, atoms, toy_prior(), s, head="prior", samples=samples, labels=labels)


# ------------------------------------------------------------------ outputs from the Python API
def test_training_and_labelling_refuse_an_unwritable_output_before_any_work(tmp_path):
    from ase_adapt.priors import make_prior
    from ase_adapt.testing import toy_frames
    from ase_adapt.train import OptimSettings, TrainSettings, train_model
    from ase_adapt.train.label import label_frames

    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")

    with pytest.raises(ValueError, match="cannot write"):
        label_frames(toy_frames(3, seed=0), make_prior("lj"), blocker / "out.xyz", progress=False)
    model = ase_adapt.build_model(elements=("H", "C", "O"), channels=4, num_layers=1, l_max=1)
    s = TrainSettings(mode="joint", optim=OptimSettings(epochs=1, batch_size=4, progress=False))
    with pytest.raises(ValueError, match="cannot write"):
        train_model(model, toy_frames(8, seed=0), s, blocker / "run")


def test_charge_reaches_the_prior_in_the_adaptation_samples():
    """The samples TTT and the force-norm detector label carry the system's charge to the prior."""
    from ase_adapt.adapt.samples import SampleSettings, label_samples, make_samples
    from ase_adapt.errors import PriorError
    from ase_adapt.priors import make_prior

    cation = molecule("CH4")
    cation.info["charge"] = 1
    with pytest.raises(PriorError, match="cannot model a charged"):
        label_samples([cation], make_prior("lj"))
    with pytest.raises(PriorError, match="cannot model a charged"):
        make_samples(cation, SampleSettings(n_rattled=2, md_steps=0), make_prior("lj"))
    gfn2 = make_prior("gfn2-xtb")
    cation.info["spin"] = 2
    neutral = molecule("CH4")
    assert abs(label_samples([cation], gfn2)[0]["energy"] - label_samples([neutral], gfn2)[0]["energy"]) > 1.0


def test_integral_float_spin_from_extxyz_is_accepted_and_a_bad_one_only_warns_in_the_model(model32):
    from ase_adapt.labels import charge_and_spin

    atoms = molecule("H2O")
    atoms.info.update(charge=np.float64(0.0), spin=np.float64(1.0))  # what extxyz gives back
    assert charge_and_spin(atoms) == (0, 1)
    atoms.calc = MLFFCalculator(model32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(atoms.get_potential_energy())  # neutral singlet: no warning
    atoms.info["spin"] = 0
    with pytest.warns(UserWarning, match="multiplicity"):
        atoms.get_potential_energy()


def test_settings_accept_numpy_scalars():
    from ase_adapt.workflows import MDSettings

    s = TTTSettings(max_steps=np.int64(10), lr=np.float32(0.01))
    assert type(s.max_steps) is int and type(s.lr) is float
    assert MDSettings(progress=np.bool_(False)).progress is False
