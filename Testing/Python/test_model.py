"""The model: 3D inflation exactness, real loader paths on tiny saved folders, meta-device real sizes."""

from __future__ import annotations

import json

import pytest
import torch

from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.model import build, from_base_models, load_checkpoint, preset, save
from BrainGemma3DLib.model.compressor import region_mask
from BrainGemma3DLib.model.encoder import InflatedSiglipEncoder, SliceSiglipEncoder, resample_position_table
from BrainGemma3DLib.model.projector import block_centres
from BrainGemma3DLib.training.tokenizer import build_demo_tokenizer, report_corpus


@pytest.fixture(scope="module")
def tokenizer():
    return build_demo_tokenizer(report_corpus(200), vocab_size=600)


@pytest.fixture(scope="module")
def siglip():
    from transformers import SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(0)
    cfg = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        patch_size=8,
        image_size=64,
    )
    return SiglipVisionModel(cfg).eval()


def small_cfg(**kw):
    base = dict(
        vision=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            patch_size=8,
            image_size=64,
            num_channels=3,
        ),
        grid=(16, 32, 48),
    )
    base.update(kw)
    return preset("demo", **base)


@pytest.mark.parametrize("init", ["mean", "centre"])
def test_inflated_patch_embedding_reproduces_2d_on_identical_slices(siglip, init):
    cfg = small_cfg(patch_init=init)
    enc = InflatedSiglipEncoder(cfg, siglip)
    slice2d = torch.rand(1, 1, 32, 48)
    volume = slice2d.unsqueeze(2).expand(1, 1, 16, 32, 48)  # identical slices
    tokens = enc.embed(volume)  # (1, D' * h * w, E)
    rgb = (slice2d * 2 - 1).expand(1, 3, 32, 48)  # the grey slice replicated to RGB, SigLIP-normalised
    ref = siglip.embeddings.patch_embedding(rgb).flatten(2).transpose(1, 2)  # (1, h * w, E)
    d, h, w = cfg.token_grid
    per_depth = tokens.reshape(1, d, h * w, -1)
    for k in range(d):
        assert torch.allclose(per_depth[:, k], ref, atol=1e-5), f"depth {k}"


def test_position_table_at_zero_depth_embedding_is_the_resampled_2d_table(siglip):
    cfg = small_cfg()
    enc = InflatedSiglipEncoder(cfg, siglip)
    d, h, w = cfg.token_grid
    expected = resample_position_table(siglip.embeddings.position_embedding.weight.detach(), (h, w))
    pos = enc.positions().reshape(d, h * w, -1)
    for k in range(d):
        assert torch.allclose(pos[k], expected)
    # The resampling is SigLIP's own bicubic interpolation of the pretrained 8x8 table to the 4x6 grid.
    assert expected.shape == (h * w, 32) and not torch.allclose(expected[0], expected[-1])


def test_one_channel_equals_three_replicated_channels(siglip):
    one = InflatedSiglipEncoder(small_cfg(in_channels=1), siglip).eval()
    three = InflatedSiglipEncoder(small_cfg(in_channels=3), siglip).eval()
    three.load_state_dict({**three.state_dict(), "plane_position": one.plane_position})
    vol = torch.rand(2, 1, 16, 32, 48)
    assert torch.allclose(one(vol), three(vol.expand(2, 3, 16, 32, 48)), atol=1e-5)


def test_published_preset_builds_the_published_design_and_differs_from_ours():
    published = preset("published")
    assert published.position == "published" and published.compressor == "pool1d"
    assert (published.tubelet, published.depth_stride) == (2, 1)
    assert published.token_grid[0] == published.grid[0] + 1  # kernel 2, stride 1, padding 1: D + 1 token rows
    ours = preset("demo")
    assert published.num_patch_tokens > 3 * ours.num_patch_tokens
    model = build(published)
    assert model.projector.location is None and not model.cfg.projector_norm


def test_location_code_names_the_block_each_anchored_token_reads():
    """Token k's location code is the centre of the brain block its latent attends to (W>0 = left)."""
    cfg = preset("demo")
    d, h, w = cfg.token_grid
    mask = region_mask(cfg.token_grid, cfg.regions)[:, : d * h * w]  # True = blocked
    grid = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (d, h, w)), indexing="ij"), -1).float()
    normalised = (2 * grid + 1) / torch.tensor([d, h, w], dtype=torch.float32) - 1  # token centres in [-1, 1]
    centres = block_centres(cfg.regions)
    for k in range(cfg.num_latents):
        seen = normalised.reshape(-1, 3)[~mask[k]]
        assert torch.allclose(seen.mean(0), centres[k], atol=1e-6)
    assert (centres[:16, 2] < 0).all() and (centres[16:, 2] > 0).all()  # right hemisphere first, then left
    model = build(cfg)
    assert model.projector.location is not None
    flat = torch.zeros(1, cfg.num_latents, cfg.vision_hidden)  # identical content in every block ...
    tokens = model.projector(flat)[0]
    assert not torch.allclose(tokens[0], tokens[16])  # ... still tells the right block from the left one


def test_slice_baseline_reads_labelled_2d_slices(siglip, tokenizer):
    cfg = small_cfg(**{"encoder": "slices", "slices": 4, "regions": None, "num_latents": 16})
    enc = SliceSiglipEncoder(cfg, siglip).eval()
    assert enc.slice_index.tolist() == [2, 6, 10, 14]
    volume = torch.rand(1, 1, 32, 48).unsqueeze(2).expand(1, 1, 16, 32, 48)  # identical slices
    tokens = enc(volume)
    assert tokens.shape == (1, 16, 32)
    per_slice = tokens.reshape(4, 4, 32)
    assert torch.allclose(per_slice[0], per_slice[3], atol=1e-5)  # no depth position: slices are alike
    x = volume * 2 - 1  # the 1-frame patch embedding is the 2D one on a grey slice
    conv2d = torch.nn.functional.conv2d(
        x[:, :, 0].expand(1, 3, 32, 48),
        siglip.embeddings.patch_embedding.weight,
        siglip.embeddings.patch_embedding.bias,
        stride=8,
    )
    assert torch.allclose(enc.patch_embedding(x[:, :, :1])[:, :, 0], conv2d, atol=1e-4)
    model = build(preset("slices"), tokenizer)
    visual = model.visual_tokens(torch.rand(1, 1, 32, 64, 64))
    labels = sum(len(ids) for ids in model.slice_labels)
    assert len(model.slice_labels) == 8 and visual.shape[1] == 32 + labels
    with pytest.raises(ValueError, match="slice baseline"):
        preset("slices", slices=5)


def test_medgemma_preset_shapes_on_meta_device():
    cfg = preset("medgemma")
    model = build(cfg, device="meta")
    vol = torch.empty(1, 1, *cfg.grid, device="meta")
    tokens = model.encoder(vol)
    assert tokens.shape == (1, cfg.num_patch_tokens, 1152) and cfg.token_grid == (16, 16, 16)
    visual = model.visual_tokens(vol)
    assert visual.shape == (1, 32, 2560)  # K visual tokens at MedGemma's hidden size
    lm_cfg = model.lm.config
    assert (lm_cfg.hidden_size, lm_cfg.num_hidden_layers, lm_cfg.vocab_size) == (2560, 34, 262208)
    embeds = torch.cat(
        [torch.empty(1, 5, 2560, device="meta"), visual, torch.empty(1, 7, 2560, device="meta")], 1
    )
    logits = model.lm(inputs_embeds=embeds).logits
    assert logits.shape == (1, 5 + 32 + 7, 262208)
    n_lm = sum(p.numel() for p in model.lm.parameters())
    assert 3.5e9 < n_lm < 4.5e9, n_lm  # Gemma 3 4B text model


# --- real loader paths on tiny folders saved exactly as the real ones ------------------------------------
@pytest.fixture(scope="module")
def base_folders(tmp_path_factory, tokenizer):
    """A tiny SiglipModel (MedSigLIP's class) and Gemma3ForConditionalGeneration (MedGemma's), saved."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipConfig,
        SiglipModel,
        SiglipTextConfig,
        SiglipVisionConfig,
    )

    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("bases")
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=8,
        image_size=64,
    )
    text = SiglipTextConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=600,
        max_position_embeddings=64,
    )
    SiglipModel(SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict())).save_pretrained(
        root / "medsiglip"
    )
    lm_text = Gemma3TextConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=len(tokenizer),
        layer_types=["sliding_attention", "full_attention"],
    )
    own_vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    mm = Gemma3ForConditionalGeneration(
        Gemma3Config(text_config=lm_text.to_dict(), vision_config=own_vision.to_dict(), mm_tokens_per_image=4)
    )
    mm.save_pretrained(root / "medgemma")
    tokenizer.save_pretrained(root / "medgemma")
    return root / "medsiglip", root / "medgemma", mm


def test_loader_reads_the_text_model_exactly_and_skips_the_2d_tower(base_folders):
    from transformers import Gemma3ForCausalLM

    vision_dir, lm_dir, mm = base_folders
    model = from_base_models(preset("demo", grid=(16, 32, 32)), vision_dir, lm_dir, device="cpu")
    saved = mm.model.language_model.state_dict()
    loaded = model.lm.model.state_dict()
    assert set(saved) == set(loaded)
    for key, value in saved.items():
        assert torch.equal(value, loaded[key]), key
    assert not any("vision" in name for name, _ in model.lm.named_parameters())
    assert (
        model.cfg.lm["hidden_size"] == 64 and model.cfg.vision["num_hidden_layers"] == 2
    )  # read, not repeated
    # The trap our loader avoids: the plain class silently re-initialises every weight.
    naive = Gemma3ForCausalLM.from_pretrained(str(lm_dir))
    assert not torch.equal(naive.model.embed_tokens.weight, mm.model.language_model.embed_tokens.weight)


def test_loader_reads_medsiglip_vision_weights(base_folders):
    from transformers import SiglipModel

    vision_dir, lm_dir, _ = base_folders
    model = from_base_models(preset("demo", grid=(16, 32, 32)), vision_dir, lm_dir, device="cpu")
    reference = SiglipModel.from_pretrained(str(vision_dir)).vision_model
    for (name, a), (_, b) in zip(
        reference.encoder.layers.named_parameters(), model.encoder.layers.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_generation_is_deterministic_and_survives_save_load(base_folders, tmp_path):
    vision_dir, lm_dir, _ = base_folders
    torch.manual_seed(3)
    model = from_base_models(preset("demo", grid=(16, 32, 32)), vision_dir, lm_dir, device="cpu")
    vol = torch.rand(1, 1, 16, 32, 32)
    first = model.generate(vol, max_new_tokens=12)[0]
    stages = {"preprocess_s", "encode_s", "generate_s", "prefill_s", "decode_token_s"}
    assert first.num_tokens > 1 and set(first.timings) == stages
    t = first.timings  # the prompt's pass, then each token's step: all inside generating
    assert (
        0 < t["prefill_s"] < t["generate_s"]
        and 0 < t["decode_token_s"] * (first.num_tokens - 1) < t["generate_s"]
    )
    assert model.generate(vol, max_new_tokens=12)[0].text == first.text
    score = model.score(vol, "The lesion is in the left frontal lobe.")

    light = save(model, tmp_path / "ckpt")  # trained parts only; bases recorded in the config
    assert json.loads((light / "braingemma3d_config.json").read_text())["lm_base"] == str(lm_dir)
    again = load_checkpoint(light, device="cpu")
    assert again.generate(vol, max_new_tokens=12)[0].text == first.text
    assert torch.allclose(again.score(vol, "The lesion is in the left frontal lobe."), score, atol=1e-5)

    full = save(model, tmp_path / "full", include_base=True)  # self-contained (how the demo weights ship)
    alone = load_checkpoint(full, device="cpu")
    assert torch.allclose(alone.score(vol, "The lesion is in the left frontal lobe."), score, atol=1e-5)
    assert len(alone.checkpoint_sha256) == 64


def test_score_of_a_span_is_part_of_the_whole(base_folders):
    vision_dir, lm_dir, _ = base_folders
    model = from_base_models(preset("demo", grid=(16, 32, 32)), vision_dir, lm_dir, device="cpu")
    text = "The lesion is in the left frontal lobe. No necrosis."
    vols = torch.rand(3, 1, 16, 32, 32)
    whole = model.score(vols, text)
    part = model.score(vols, text, span=(text.index("left"), text.index("left") + 4))
    assert whole.shape == part.shape == (3,)
    assert (part > whole).all() and (part < 0).all()


def test_bad_folders_get_clear_messages(base_folders, tmp_path):
    vision_dir, lm_dir, _ = base_folders
    gated = tmp_path / "gated"
    gated.mkdir()
    (gated / "config.json").write_text((lm_dir / "config.json").read_text())
    with pytest.raises(InputError, match="no \\*.safetensors weights"):
        from_base_models(preset("demo", grid=(16, 32, 32)), vision_dir, gated, device="cpu")
    with pytest.raises(InputError, match="expected a Gemma 3"):
        from_base_models(preset("demo", grid=(16, 32, 32)), vision_dir, vision_dir, device="cpu")
    with pytest.raises(InputError, match="not in the local Hugging Face cache"):
        from_base_models(preset("demo"), "google/medsiglip-448", lm_dir, device="cpu")
    with pytest.raises(InputError, match="not a BrainGemma3D checkpoint"):
        load_checkpoint(tmp_path)


def test_training_loss_reaches_only_the_trainable_parts(tokenizer):
    cfg = preset("demo", grid=(16, 32, 32))
    model = build(cfg, tokenizer)
    model.encoder.gradient_checkpointing = True
    model.train()
    loss = model.loss(
        torch.rand(2, 1, 16, 32, 32), ["No lesion is seen.", "A lesion in the left frontal lobe."]
    )
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is None for p in model.lm.parameters())
    assert model.projector.scale.grad is not None and model.encoder.patch_embedding.weight.grad is not None
    assert model.compressor.latents.grad is not None and model.encoder.depth_position.grad is not None


def test_lora_adapter_round_trip(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    model = build(preset("demo", grid=(16, 32, 32)), tokenizer)
    model.lm = get_peft_model(
        model.lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    vol = torch.rand(1, 1, 16, 32, 32)
    text = "A lesion in the right temporal lobe."
    with torch.no_grad():
        expected = model.score(vol, text)
    folder = save(model, tmp_path / "lora", include_base=True)
    assert (folder / "adapter" / "adapter_config.json").is_file()
    again = load_checkpoint(folder, device="cpu")
    with torch.no_grad():
        assert torch.allclose(again.score(vol, text), expected, atol=1e-5)


def test_published_layout_is_read_with_weights_only(base_folders, tmp_path):
    """The published layout: projector_vis_scale.pt, lora_adapters/, vision_model/, language_model/."""
    import shutil

    from peft import LoraConfig, get_peft_model

    from BrainGemma3DLib.model import load, load_published

    vision_dir, lm_dir, _ = base_folders
    pub = tmp_path / "published"
    shutil.copytree(vision_dir, pub / "vision_model")
    shutil.copytree(lm_dir, pub / "language_model")
    torch.manual_seed(7)
    proj = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    torch.save({"vision_projector": proj.state_dict(), "vis_scale": 3.5}, pub / "projector_vis_scale.pt")
    from transformers import Gemma3ForCausalLM

    from BrainGemma3DLib.model.language import KEY_MAPPING

    text_lm = Gemma3ForCausalLM.from_pretrained(str(lm_dir), key_mapping=KEY_MAPPING)
    get_peft_model(text_lm, LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(
        pub / "lora_adapters"
    )

    model = load(str(pub), device="cpu")
    assert (
        model.cfg.position == "published"
        and model.cfg.compressor == "pool1d"
        and not model.cfg.projector_norm
    )
    assert torch.equal(model.projector.mlp[0].weight, proj[0].weight)
    assert model.projector.scale.item() == pytest.approx(3.5)
    assert hasattr(model.lm, "peft_config")
    assert model.generate(torch.rand(1, 1, *model.cfg.grid), max_new_tokens=4)[0].num_tokens > 0

    # A pickle that carries code is refused by torch.load(weights_only=True), with the file named.
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"vision_projector": Evil(), "vis_scale": 1.0}, pub / "projector_vis_scale.pt")
    with pytest.raises(InputError, match="weights_only") as err:
        load_published(pub, device="cpu")
    assert "projector_vis_scale.pt" in str(err.value)
