"""ScoreConfig: one validated set of scoring options from the CLI and batch down to the pipeline."""
import argparse
import math

import pytest

from napari_focusq.cli.parser import build_parser
from napari_focusq.config import ScoreConfig
from napari_focusq.errors import ConfigError, FocusQError


@pytest.mark.parametrize("options,field", [
    ({"pixel_size_um": 0}, "pixel_size_um"),
    ({"pixel_size_um": math.nan}, "pixel_size_um"),
    ({"modality": "darkfield"}, "modality"),
    ({"threshold_um": -1}, "threshold_um"),
    ({"threshold_um": math.inf}, "threshold_um"),
    ({"slice": "middle"}, "slice"),
    ({"slice": True}, "slice"),
    ({"level": -1}, "level"),
    ({"min_tissue": 1.5}, "min_tissue"),
    ({"optics": {"na": 0.5, "zoom": 2}}, "optics"),
    ({"threshhold_um": 1.0}, "threshhold_um"),  # a misspelt option is named, not ignored
])
def test_a_bad_option_names_its_field(options, field):
    with pytest.raises(ConfigError) as e:
        ScoreConfig.from_options(**options)
    assert e.value.field == field
    assert isinstance(e.value, (FocusQError, ValueError))  # callers catching either still do


def test_normalises_what_means_the_same():
    c = ScoreConfig.from_options(slice="3", optics={"na": None, "immersion": None})
    assert c.slice == 3 and c.optics is None  # no optics given == the file's or the model's
    assert ScoreConfig(optics={"na": 0.5, "wavelength_um": None}).optics == {"na": 0.5}


def test_resume_key_is_the_manifest_key_of_earlier_versions():
    # batch's manifest compares this dict with the one an earlier run recorded: the same keys
    # (in the same order, run.json prints them) or every finished slide would be redone
    c = ScoreConfig(threshold_um=1.5, pixel_size_um=0.25, modality="brightfield", slice=2,
                    optics={"na": 0.75})
    assert c.resume_key() == {"threshold_um": 1.5, "pixel_size_um": 0.25, "modality": "brightfield",
                              "level": None, "slice": 2, "optics": {"na": 0.75}}
    assert list(ScoreConfig().resume_key()) == ["threshold_um", "pixel_size_um", "modality", "level", "slice",
                                                "optics"]
    assert ScoreConfig(min_tissue=0.3).resume_key()["min_tissue"] == 0.3


def test_from_args_matches_the_parsed_command_line():
    args = build_parser().parse_args(["score", "a.tif", "--out", "o", "--pixel-size", "0.5", "--slice", "per-tile",
                                      "--threshold-um", "1.25", "--na", "0.45", "--modality", "fluorescence"])
    c = ScoreConfig.from_args(args)
    assert (c.pixel_size_um, c.slice, c.threshold_um, c.modality, c.model) == (0.5, "per-tile", 1.25,
                                                                                "fluorescence", "default")
    assert c.optics == {"na": 0.45}
    assert c.pipeline_kwargs() == {"pixel_size_um": 0.5, "modality": "fluorescence", "model": "default",
                                   "level": None, "slice": "per-tile", "min_tissue": None, "optics": {"na": 0.45}}
    # batch's parser gives the same config for the same options
    bargs = build_parser().parse_args(["batch", "a.tif", "--out", "o", "--pixel-size", "0.5", "--slice", "per-tile",
                                       "--threshold-um", "1.25", "--na", "0.45", "--modality", "fluorescence"])
    assert ScoreConfig.from_args(bargs) == c
    assert ScoreConfig.from_args(argparse.Namespace()) == ScoreConfig()
