"""The command line is made from the configs: every setting of the recipe is an option, with its config's default,
and the recipe's LoRA and training settings are the course's LoraConfig and TrainConfig (one source each)."""

import dataclasses

import pytest

from peftlab import LoraConfig, TrainConfig
from peftlab.cli import DefaultsHelp, Parser, add_finetune_arguments, finetune_config
from peftlab.production.finetune import HELP, FinetuneConfig


def finetune_parser():
    parser = Parser(prog="peftlab finetune", formatter_class=DefaultsHelp)
    add_finetune_arguments(parser)
    return parser


def test_every_setting_is_an_option_with_the_configs_default():
    parser = finetune_parser()
    args = parser.parse_args(["--data", "addition", "--output", "out"])
    config = finetune_config(args)
    expected = dataclasses.replace(FinetuneConfig(), data="addition", output_dir="out")
    assert config == expected
    names = {f.name for f in dataclasses.fields(FinetuneConfig)} - {"extra"}
    assert set(HELP) == names, "every option has its help, and no help is left over"
    assert {a.dest for a in parser._actions} - {"help"} == names


def test_the_recipe_takes_the_course_configs_fields_and_rules():
    assert issubclass(FinetuneConfig, LoraConfig) and issubclass(FinetuneConfig, TrainConfig)
    for course in (LoraConfig, TrainConfig):
        assert {f.name for f in dataclasses.fields(course)} <= {f.name for f in dataclasses.fields(FinetuneConfig)}
    # the defaults the recipe changes, on purpose (the comments in FinetuneConfig say why)
    changed = {f.name for f in dataclasses.fields(FinetuneConfig)
               if f.name in {g.name for g in dataclasses.fields(LoraConfig) + dataclasses.fields(TrainConfig)}
               and getattr(FinetuneConfig(), f.name) != getattr(LoraConfig() if hasattr(LoraConfig(), f.name)
                                                               else TrainConfig(), f.name)}
    assert changed == {"target_modules", "batch_size"}
    with pytest.raises(ValueError, match="LoRA rank r must be a positive integer"):
        FinetuneConfig(r=0)
    with pytest.raises(ValueError, match="weight_decay must be a finite number of at least 0"):
        FinetuneConfig(weight_decay=-1.0)


def test_options_parse_to_the_fields():
    args = finetune_parser().parse_args(["--data", "d.jsonl", "--output", "o", "--r", "16", "--alpha", "8",
                                         "--targets", "q_proj", "v_proj", "--accumulate", "2", "--warmup", "0",
                                         "--no-progress", "--use-rslora", "--max-length", "64", "--method", "qlora"])
    config = finetune_config(args)
    assert (config.r, config.alpha, config.target_modules, config.gradient_accumulation_steps, config.warmup_steps,
            config.progress, config.use_rslora, config.max_length, config.method) == \
        (16, 8.0, ("q_proj", "v_proj"), 2, 0, False, True, 64, "qlora")


def test_help_shows_defaults_but_not_for_switches(capsys):
    with pytest.raises(SystemExit):
        finetune_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "optimizer steps (default: 300)" in text and "dropout on LoRA's input (default: 0.0)" in text
    assert "--no-progress without a progress bar --accumulate" in text  # no "(default: True)" after a switch
