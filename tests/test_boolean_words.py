"""One set of boolean words: a bin's boolean flag and a config override of a bool key
(schema field, or an open-mapping key that holds a bool) take the same words alike."""
import os

import pytest

from wespeaker_py.bin import extract
from wespeaker_py.config import ConfigError, load_config
from wespeaker_py.utils.booleans import BOOL_WORDS, parse_bool

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET34 = os.path.join(REPO_ROOT, "conf", "resnet34.yaml")
REQUIRED = ["--config", "c.yaml", "--model_path", "m.pt", "--data_list", "l",
            "--embed_ark", "e.ark"]
WORDS = [(word, value) for pair in BOOL_WORDS for word, value in zip(pair, (True, False))]
LISTED = "true/false, yes/no, y/n, on/off, t/f, 1/0; none or nothing for false"


def flag_value(word):
    return extract.build_parser().parse_args(REQUIRED + ["--random_chunk", word]).random_chunk


@pytest.mark.parametrize("word, value", WORDS + [(w.upper(), v) for w, v in WORDS]
                         + [("On", True), ("Yes", True), ("False", False), ("None", False),
                            ("none", False), ("", False)])
def test_a_flag_and_an_override_give_each_word_the_same_value(word, value):
    # YAML 1.1 reads 1/0 as ints, on/off/yes/no as bools and y/n/t/f as strings
    config = load_config(RESNET34, [("dataset_args.spec_aug", word),
                                    ("optimizer_args.nesterov", word)])
    assert flag_value(word) is value
    assert config.dataset_args.spec_aug is value
    assert config.optimizer_args["nesterov"] is value
    assert parse_bool(word) is value


@pytest.mark.parametrize("word", ["2", "maybe", "tru", "01", "1.0", "nil"])
def test_a_word_of_neither_kind_is_refused_naming_the_flag_or_key(word, capsys):
    with pytest.raises(SystemExit) as stop:
        flag_value(word)
    assert stop.value.code == 2
    assert (f"argument --random_chunk/--random-chunk: expected a boolean ({LISTED}), got {word!r}"
            in capsys.readouterr().err)
    for key in ("dataset_args.spec_aug", "optimizer_args.nesterov"):
        with pytest.raises(ConfigError) as refused:
            load_config(RESNET34, [(key, word)])
        assert str(refused.value) == (f"config key '{key}' must be bool ({LISTED}), "
                                      f"got {word!r}")


def test_null_is_not_a_boolean_word_for_a_bool_key():
    with pytest.raises(ConfigError, match="config key 'dataset_args.spec_aug' must be bool, "
                                          "got null"):
        load_config(RESNET34, [("dataset_args.spec_aug", "null")])
