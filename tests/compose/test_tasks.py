import dataclasses

import numpy as np
import pytest

from dataengine.compose.tasks import (DEFAULT_TASKS, DEFAULT_TEMPLATES, KIND_TASKS, ComposeConfig, choose_tasks,
                                      choose_template, hash_uniform, task_needs)
from dataengine.errors import RecipeError

IDS = [f"{i:024x}" for i in range(6000)]


def test_defaults_validate_and_cover_every_kind():
    cfg = ComposeConfig().validate()
    assert set(cfg.tasks) == set(KIND_TASKS) and set(cfg.templates) == {"image", "audio", "video", "sensor"}
    for kind, weights in cfg.tasks.items():
        assert set(weights) <= set(KIND_TASKS[kind]) and sum(weights.values()) > 0
    # the recipe mounts it through dataclasses.asdict: the dict round-trips
    assert ComposeConfig.from_dict(dataclasses.asdict(cfg)) == cfg


@pytest.mark.parametrize("data, key, hint", [
    ({"tasks": {"image": {"image_to_captoin": 1.0}}}, "compose.tasks.image", "image_to_caption"),
    ({"tasks": {"imgae": {"image_to_caption": 1.0}}}, "compose.tasks", "image"),
    ({"templates": {"vidoe": ["Describe."]}}, "compose.templates", "video"),
    ({"tasks": {"audio": {"instruct": -1.0}}}, "compose.tasks.audio.instruct", ">= 0"),
    ({"tasks": {"audio": {"instruct": 0.0}}}, "compose.tasks.audio", "positive weight"),
    ({"templates": {"image": []}}, "compose.templates.image", "non-empty list"),
    ({"pack_length": -5}, "compose.pack_length", ">= 0"),
])
def test_bad_settings_name_the_key_and_the_fix(data, key, hint):
    with pytest.raises(RecipeError) as e:
        ComposeConfig.from_dict(data)
    assert key in str(e.value) and hint in str(e.value)


def test_unknown_top_level_key_suggests_the_close_one():
    with pytest.raises(RecipeError, match="did you mean 'templates'"):
        ComposeConfig.from_dict({"templats": {}})


def test_task_choice_is_stable_per_id_and_seeded():
    cfg = ComposeConfig()
    paired = [True] * len(IDS)
    a = choose_tasks(cfg, "image", IDS, 0, paired)
    assert a == choose_tasks(cfg, "image", IDS, 0, paired)
    # one id alone gets the same task as within a batch: the choice depends on (seed, id) only
    assert [choose_tasks(cfg, "image", [i], 0, [True])[0] for i in IDS[:50]] == a[:50]
    assert a[::-1] == choose_tasks(cfg, "image", IDS[::-1], 0, paired)
    b = choose_tasks(cfg, "image", IDS, 1, paired)
    assert 0.3 < np.mean(np.array(a) != np.array(b)) < 0.9  # another seed redraws


@pytest.mark.parametrize("kind", ["image", "audio", "video", "sensor"])
def test_task_frequencies_follow_the_weights(kind):
    weights = {t: float(w) for t, w in zip(KIND_TASKS[kind], [3, 1, 2, 0.5])}
    cfg = ComposeConfig(tasks={kind: weights})
    chosen = np.array(choose_tasks(cfg, kind, IDS, 7, [True] * len(IDS)))
    total = sum(weights.values())
    for task, w in weights.items():
        share = float(np.mean(chosen == task))
        # binomial sd <= sqrt(.25/6000) = 0.0065: 4 sd
        assert abs(share - w / total) < 0.026, (task, share, w / total)


def test_zero_weight_is_never_chosen_and_unlisted_tasks_weigh_zero():
    cfg = ComposeConfig(tasks={"audio": {"audio_to_transcript": 0.0, "transcript_to_audio": 1.0, "instruct": 0.0}})
    assert set(choose_tasks(cfg, "audio", IDS, 3, [True] * len(IDS))) == {"transcript_to_audio"}
    cfg = ComposeConfig(tasks={"video": {"instruct": 2.0, "video": 1.0}})  # caption tasks unlisted: weight 0
    assert set(choose_tasks(cfg, "video", IDS, 3, [True] * len(IDS))) == {"instruct", "video"}
    # a kind left out keeps the defaults; tasks that need an aligned modality only for items that have it
    text_only = {t for t in DEFAULT_TASKS["image"] if task_needs("image", t) <= {"text"}}
    assert set(choose_tasks(cfg, "image", IDS, 3, [True] * len(IDS))) == text_only
    with_depth = set(choose_tasks(cfg, "image", IDS, 3, [{"text", "depth"}] * len(IDS)))
    assert with_depth == set(DEFAULT_TASKS["image"]) and with_depth - text_only == {"image_to_depth", "depth_to_image"}


def test_items_without_an_aligned_modality_keep_the_task_they_had():
    """Adding depth tasks to the image kind must not move any image that has no depth map (same draw)."""
    cfg = ComposeConfig(tasks={"image": {"image_to_caption": 0.4, "caption_to_image": 0.4, "instruct": 0.2,
                                         "image_to_depth": 5.0}})
    before = ComposeConfig(tasks={"image": {"image_to_caption": 0.4, "caption_to_image": 0.4, "instruct": 0.2}})
    assert choose_tasks(cfg, "image", IDS, 7, [True] * len(IDS)) == choose_tasks(before, "image", IDS, 7,
                                                                                  [True] * len(IDS))


def test_items_without_text_are_unconditional_whatever_the_weights():
    cfg = ComposeConfig()
    paired = np.arange(len(IDS)) % 2 == 0
    chosen = np.array(choose_tasks(cfg, "sensor", IDS, 0, paired))
    assert (chosen[~paired] == "sensor").all()
    assert "sensor" not in set(chosen[paired])  # default weight of the unconditional task is 0
    assert choose_tasks(cfg, "text", IDS[:3], 0, [False] * 3) == ["text"] * 3
    assert choose_tasks(cfg, "chat", IDS[:3], 0, [False] * 3) == ["chat"] * 3


def test_templates_are_drawn_stably_from_the_recipe_list():
    cfg = ComposeConfig(templates={"image": ["One.", "Two.", "Three."]})
    drawn = [choose_template(cfg, "image", i, 0) for i in IDS[:600]]
    assert drawn == [choose_template(cfg, "image", i, 0) for i in IDS[:600]]
    counts = {t: drawn.count(t) for t in ["One.", "Two.", "Three."]}
    assert sum(counts.values()) == 600 and min(counts.values()) > 150
    assert choose_template(cfg, "audio", IDS[0], 0) in DEFAULT_TEMPLATES["audio"]


def test_hash_uniform_is_uniform_and_salted():
    u = hash_uniform(0, IDS, "task")
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    assert not np.array_equal(u, hash_uniform(0, IDS, "template"))
