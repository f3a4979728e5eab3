"""Agent adherence: conditioning boxes rasterised, pixel counts, class IoU with its interval, and the segmenters
(a 3D detector projected like the conditioning; a tiny SegFormer loaded from disk)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gaia2.detection.base import Detector3D
from gaia2.detection.features import agent_features
from gaia2.evaluation.agent_iou import (DetectorSegmenter, TransformersSegmenter, agent_iou, conditioning_masks,
                                        iou_counts, label_category, label_table, load_segmenter, sample_iou_counts,
                                        write_tiny_segmenter)
from gaia2.schema.metadata import AGENT_CATEGORIES
from gaia2.synth.rigs import RIGS

CAR, VAN, BUS, CYCLIST, PEDESTRIAN = (AGENT_CATEGORIES.index(c) for c in ("car", "van", "bus", "cyclist", "pedestrian"))
PALETTE = np.array([[0, 0, 0], [220, 40, 40], [40, 220, 40], [40, 40, 220], [220, 220, 40], [40, 220, 220]], np.uint8)


def _box(x1, y1, x2, y2, depth, category):
    f = np.zeros(13)
    f[:4], f[6], f[12] = (x1, y1, x2, y2), depth, category
    return f


def _rig(n=3):
    rig = RIGS["sedan6_30hz"]
    return [rig.camera_model(i, 0.5) for i in range(n)]   # front, front_left, front_right at 64 x 36


def _scene(frames=3):
    """Ego-frame boxes (cx, cy, cz, l, w, h, yaw, category) per frame: agents ahead and to the left, moving."""
    out = []
    for t in range(frames):
        out.append(np.array([[12.0 - 0.5 * t, 0.5, 0.8, 4.5, 1.9, 1.6, 0.1, CAR],
                             [8.0, 3.0 + 0.2 * t, 0.9, 0.6, 0.6, 1.8, 1.4, PEDESTRIAN],
                             [18.0, -3.5, 1.4, 6.0, 2.2, 2.8, 0.0, VAN],
                             [5.0, 6.0, 0.9, 1.8, 0.6, 1.7, 1.5, CYCLIST]]))
    return out


class _Replay(Detector3D):
    """Returns fixed boxes whatever the frames show: the 3D boxes a perfect detector would find."""

    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, frames, cameras, timestamps, clip=None):
        assert frames.shape[:2] == (len(cameras), len(self.boxes))
        return [b.copy() for b in self.boxes]


def _conditioned(boxes, cams):
    feats, valid = agent_features(boxes, cams, max_agents=4)               # (T, N, A, 13): the shards' layout
    return feats, valid, conditioning_masks(feats.swapaxes(0, 1), valid.swapaxes(0, 1), cams[0].height, cams[0].width)


def test_rasterised_boxes_use_pixel_centres_and_the_nearest_box_wins():
    boxes = np.stack([_box(0.0, 0.0, 0.5, 0.5, 10.0, CAR), _box(0.25, 0.0, 0.75, 0.5, 5.0, PEDESTRIAN),
                      _box(0.0, 0.0, 1.0, 1.0, 1.0, BUS)])
    m = conditioning_masks(boxes, np.array([True, True, False]), 8, 8)
    want = np.zeros((8, 8), np.uint8)
    want[:4, :2], want[:4, 2:6] = CAR, PEDESTRIAN                          # the nearer pedestrian covers the car
    np.testing.assert_array_equal(m, want)
    # The far car is painted over whatever the slot order.
    np.testing.assert_array_equal(conditioning_masks(boxes[[1, 0]], np.array([True, True]), 8, 8), want)
    # An edge exactly on a pixel centre: [x1, x2) keeps the centre at x1, not the one at x2.
    edge = conditioning_masks(_box(1.5 / 8, 0, 3.5 / 8, 1, 1, VAN)[None], np.array([True]), 1, 8)
    np.testing.assert_array_equal(edge[0], [0, VAN, VAN, 0, 0, 0, 0, 0])
    # Leading axes are kept; padding (category 0) paints nothing.
    many = conditioning_masks(np.zeros((2, 3, 4, 13)), np.ones((2, 3, 4), bool), 5, 7)
    assert many.shape == (2, 3, 5, 7) and many.dtype == np.uint8 and not many.any()


def test_partial_overlap_gives_the_closed_form_and_counts_are_pooled():
    cond = conditioning_masks(_box(0, 0, 0.5, 0.5, 1, CAR)[None], np.array([True]), 8, 8)      # 4 x 4 = 16 px
    found = conditioning_masks(_box(0.25, 0, 0.75, 0.5, 1, CAR)[None], np.array([True]), 8, 8)  # shifted 2 px
    inter, union = iou_counts(cond, found)
    assert (inter[CAR], union[CAR]) == (8, 24) and inter.shape == union.shape == (len(AGENT_CATEGORIES),)
    assert agent_iou(inter[None], union[None]).value == pytest.approx(1 / 3)
    # A second sample found exactly: pooled 24 / 40, not the mean of the two ratios (2 / 3).
    i2, u2 = iou_counts(cond, cond)
    result = agent_iou(np.stack([inter, i2]), np.stack([union, u2]))
    assert result.value == pytest.approx(24 / 40) and result.per_class == {"car": pytest.approx(0.6)}
    assert result.low is None and result.high is None and result.n_samples == 2   # too few samples for an interval
    # Two classes: the mean of the class IoUs, each pooled over samples.
    ped = conditioning_masks(_box(0.5, 0.5, 1, 1, 1, PEDESTRIAN)[None], np.array([True]), 8, 8)
    i3, u3 = iou_counts(ped, np.zeros_like(ped))
    both = agent_iou(np.stack([inter, i3]), np.stack([union, u3]))
    assert both.value == pytest.approx((1 / 3 + 0) / 2)
    assert both.per_class == {"car": pytest.approx(1 / 3), "pedestrian": 0.0}
    assert both.to_json()["per_class"]["pedestrian"] == 0.0 and both.to_json()["n"] == 2


def test_boxes_found_where_they_are_conditioned_score_one_and_elsewhere_zero():
    cams = _rig()
    boxes = _scene()
    feats, valid, cond = _conditioned(boxes, cams)
    assert (valid.sum(axis=(0, 2)) > 0).all() and len(np.unique(cond)) >= 4   # every camera sees agents
    frames = PALETTE[cond]                                                # coloured rectangles at the boxes
    found = DetectorSegmenter(_Replay(boxes)).segment(frames, cams)
    assert found.shape == frames.shape[:4] and found.dtype == np.uint8
    inter, union = sample_iou_counts(feats, valid, found)
    result = agent_iou(inter[None], union[None])
    assert result.value == 1.0 and set(result.per_class) == {"car", "van", "pedestrian", "cyclist"}

    # The same agents 15 m further to the left: drawn elsewhere, nothing overlaps.
    moved = [b + np.array([0, 15.0, 0, 0, 0, 0, 0, 0]) for b in boxes]
    elsewhere = DetectorSegmenter(_Replay(moved)).segment(frames, cams)
    assert elsewhere.any()
    inter, union = iou_counts(cond, elsewhere)
    assert agent_iou(inter[None], union[None]).value == 0.0

    # The right places with the wrong categories: a car where a pedestrian is conditioned counts 0.
    swapped = [np.concatenate([b[:, :7], (b[:, 7:] % 5) + 1], axis=1) for b in boxes]
    wrong = DetectorSegmenter(_Replay(swapped)).segment(frames, cams)
    np.testing.assert_array_equal(wrong > 0, cond > 0)
    inter, union = iou_counts(cond, wrong)
    assert agent_iou(inter[None], union[None]).value == 0.0


def test_the_bootstrap_interval_contains_the_value_and_no_agent_is_nan():
    rng = np.random.default_rng(0)
    union = rng.integers(0, 400, size=(30, len(AGENT_CATEGORIES)))
    inter = (union * rng.uniform(0.2, 0.9, size=union.shape)).astype(np.int64)
    result = agent_iou(inter, union, bootstrap=200, seed=1)
    assert result.low <= result.value <= result.high and result.high - result.low > 0.005
    assert agent_iou(inter, union, bootstrap=200, seed=1) == result               # seeded
    assert agent_iou(inter, union, bootstrap=0).low is None
    empty = agent_iou(np.zeros((9, 6), np.int64), np.zeros((9, 6), np.int64))
    assert math.isnan(empty.value) and empty.per_class == {} and empty.low is None and empty.n_samples == 9
    with pytest.raises(ValueError, match="intersection <= union"):
        agent_iou(union + 1, union)
    with pytest.raises(ValueError, match="ids outside"):
        iou_counts(np.full((2, 2), 6, np.uint8), np.zeros((2, 2), np.uint8))


def test_label_names_map_onto_agent_categories():
    assert label_category("car") == CAR and label_category("truck") == VAN and label_category("bus") == BUS
    assert label_category("rider") == CYCLIST and label_category("motorcycle") == CYCLIST
    assert label_category("person") == PEDESTRIAN and label_category("Pedestrian") == PEDESTRIAN
    assert label_category("car;auto;automobile;machine;motorcar") == CAR                  # ADE20K synonyms
    assert label_category("minibike;motorbike") == CYCLIST and label_category("van") == VAN
    assert label_category("human--rider--other-rider") == CYCLIST                          # Mapillary Vistas
    assert label_category("object--vehicle--car") == CAR
    assert label_category("road") == label_category("train") == label_category("sky") == 0
    np.testing.assert_array_equal(label_table({0: "road", 1: "car", 3: "person"}), [0, CAR, 0, PEDESTRIAN])
    with pytest.raises(ValueError, match="none of its labels"):
        label_table({0: "road", 1: "sky"})


def test_a_tiny_segformer_loads_from_disk_and_segments(tmp_path):
    path = write_tiny_segmenter(str(tmp_path / "segformer"), seed=0)
    seg = load_segmenter(path)
    assert isinstance(seg, TransformersSegmenter) and seg.name == "transformers:segformer"
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 3, 36, 64, 3), dtype=np.uint8)
    out = seg.segment(frames)
    assert out.shape == (2, 3, 36, 64) and out.dtype == np.uint8
    assert out.min() >= 0 and out.max() < len(AGENT_CATEGORIES)
    np.testing.assert_array_equal(seg.segment(frames[:1, :2]), out[:1, :2])       # per image, batch-independent
    with pytest.raises(ValueError, match="uint8"):
        seg.segment(frames.astype(np.float32))


def _write_tiny_oneformer(path) -> str:
    """The paper's segmenter class (OneFormer, Swin backbone), tiny and random, with its processor and tokenizer."""
    import torch
    from transformers import OneFormerConfig, OneFormerForUniversalSegmentation, OneFormerImageProcessor, \
        OneFormerProcessor, SwinConfig

    from gaia2.embedding.clip import _save_tokenizer
    from gaia2.evaluation.agent_iou import CITYSCAPES_LABELS

    id2label = dict(enumerate(CITYSCAPES_LABELS))
    backbone = SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=2, image_size=64,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = OneFormerConfig(backbone_config=backbone, num_queries=4, conv_dim=32, mask_dim=32, hidden_dim=32,
                          encoder_feedforward_dim=16, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                          dim_feedforward=16, text_encoder_width=32, text_encoder_num_layers=1,
                          text_encoder_context_length=16, task_seq_len=16, text_encoder_n_ctx=2, query_dec_layers=1,
                          id2label=id2label, label2id={v: k for k, v in id2label.items()}, num_labels=len(id2label))
    torch.manual_seed(0)
    OneFormerForUniversalSegmentation(cfg).save_pretrained(str(path))
    tokenizer = _save_tokenizer(path, 16)
    meta = {**{str(k): v for k, v in id2label.items()}, "thing_ids": list(range(11, 19)),
            "class_names": list(CITYSCAPES_LABELS)}
    images = OneFormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 128}, metadata=meta,
                                     num_labels=len(id2label), num_text=2)
    OneFormerProcessor(image_processor=images, tokenizer=tokenizer, max_seq_length=16,
                       task_seq_length=16).save_pretrained(str(path))
    return str(path)


def test_a_tiny_oneformer_loads_from_disk_and_segments(tmp_path):
    seg = load_segmenter(_write_tiny_oneformer(tmp_path / "oneformer"))
    assert isinstance(seg, TransformersSegmenter) and seg.name == "transformers:oneformer" and seg.task_prompt
    assert seg.table[13] == CAR and seg.table[11] == PEDESTRIAN and seg.table[0] == 0
    out = seg.segment(np.random.default_rng(0).integers(0, 256, size=(1, 2, 36, 64, 3), dtype=np.uint8))
    assert out.shape == (1, 2, 36, 64) and out.dtype == np.uint8 and out.max() < len(AGENT_CATEGORIES)


def test_the_reference_detector_loads_as_a_segmenter(tmp_path):
    from gaia2.detection.mono3d import Mono3DConfig, MonoDetector3D

    path = str(tmp_path / "mono3d")
    MonoDetector3D(Mono3DConfig(width=4, depth=0, top_k=4)).save_pretrained(path)
    seg = load_segmenter(path)
    assert isinstance(seg, DetectorSegmenter) and seg.name.startswith("detector:mono3d")
    cams = _rig(2)
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 2, 36, 64, 3), dtype=np.uint8)
    out = seg.segment(frames, cams)
    assert out.shape == (2, 2, 36, 64) and out.dtype == np.uint8 and out.max() < len(AGENT_CATEGORIES)
    with pytest.raises(ValueError, match="camera models"):
        seg.segment(frames)


def test_a_missing_segmenter_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.*transformers segmentation checkpoint"):
        load_segmenter(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*lacks config.json"):
        load_segmenter(str(tmp_path / "empty"))
