"""crossent.integrations.transformers: a patched *ForCausalLM against its unpatched twin.

Tiny random configs, built directly (nothing downloaded). Each family's patched model must
give the stock loss and every parameter's gradient, with ignored labels and with
num_items_in_batch; inference calls must be untouched; Trainer must log the same losses.
"""

import copy

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from transformers.loss.loss_utils import ForCausalLMLoss  # noqa: E402

from crossent.integrations.transformers import (  # noqa: E402
    causal_lm_loss,
    is_patched,
    patch,
    unpatch,
)

V, H = 128, 32
SMALL = dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
             pad_token_id=0, bos_token_id=1, eos_token_id=2)

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}),
    # ties its embeddings by default; softcap active: the head's weights are scaled up below
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM",
               {"head_dim": 8, "final_logit_softcapping": 30.0, "sliding_window": 8}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
    # divides its logits by config.logits_scaling: folded into the hidden states
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}),
}


def make(family="llama", seed=0, **overrides):
    cfg_name, model_name, extra = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_name)(**{**SMALL, **extra, **overrides})
    config._attn_implementation = "eager"
    model = getattr(transformers, model_name)(config)
    with torch.no_grad():
        # logits of order 10, so a softcap of 30 and the shift of labels matter
        model.get_output_embeddings().weight.normal_(0.0, 2.0)
    model.train()
    return model


def batch(seed=1, b=3, t=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (b, t), generator=g)
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt that is not trained on
    labels[1, -3:] = -100  # right padding
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    return ids, labels, mask


def twins(family="llama", **overrides):
    ref = make(family, **overrides)
    return patch(copy.deepcopy(ref)), ref


def assert_same_grads(model, ref, rtol=1e-5, atol=1e-6):
    got = dict(model.named_parameters())
    for name, p in ref.named_parameters():
        assert (p.grad is None) == (got[name].grad is None), name
        if p.grad is not None:
            # float32 sums in another order: atol relative to the gradient's own scale
            scale = max(1.0, p.grad.abs().max().item())
            torch.testing.assert_close(got[name].grad, p.grad, rtol=rtol, atol=atol * scale,
                                       msg=lambda m, name=name: f"{name}: {m}")


def step(model, **kw):
    model.zero_grad(set_to_none=True)
    out = model(**kw)
    out.loss.backward()
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_loss_and_gradients_match_stock(family):
    model, ref = twins(family)
    ids, labels, mask = batch()
    for extra in ({}, {"num_items_in_batch": torch.tensor(40)}):
        kw = dict(input_ids=ids, attention_mask=mask, labels=labels, **extra)
        out, want = step(model, **kw), step(ref, **kw)
        assert out.logits is None
        torch.testing.assert_close(out.loss, want.loss, rtol=1e-5, atol=0)
        assert_same_grads(model, ref)


def test_gemma2_softcap_is_applied():
    model, ref = twins("gemma2")
    ids, labels, mask = batch()
    out = model(input_ids=ids, labels=labels)
    with torch.no_grad():
        uncapped = unpatch(copy.deepcopy(ref))
        uncapped.config.final_logit_softcapping = None
        plain = uncapped(input_ids=ids, labels=labels).loss
    assert not torch.allclose(out.loss, plain, rtol=1e-3)  # the softcap changes this loss


@pytest.mark.parametrize("tie", [True, False])
def test_llama_tied_and_untied_head(tie):
    model, ref = twins("llama", tie_word_embeddings=tie)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    assert tied == tie
    ids, labels, mask = batch(2)
    out, want = step(model, input_ids=ids, labels=labels), step(ref, input_ids=ids, labels=labels)
    torch.testing.assert_close(out.loss, want.loss, rtol=1e-5, atol=0)
    assert_same_grads(model, ref)


def test_head_with_bias():
    ref = make("llama", tie_word_embeddings=False)
    torch.manual_seed(3)
    ref.lm_head = torch.nn.Linear(H, V, bias=True)
    with torch.no_grad():
        ref.lm_head.bias.normal_(0.0, 1.0)
    model = patch(copy.deepcopy(ref))
    ids, labels, _ = batch(3)
    kw = dict(input_ids=ids, labels=labels, num_items_in_batch=25)
    out, want = step(model, **kw), step(ref, **kw)
    torch.testing.assert_close(out.loss, want.loss, rtol=1e-5, atol=0)
    assert_same_grads(model, ref)
    assert model.lm_head.bias.grad is not None


def test_float64_model():
    ref = make("llama").to(torch.float64)
    model = patch(copy.deepcopy(ref))
    ids, labels, mask = batch(4)
    kw = dict(input_ids=ids, attention_mask=mask, labels=labels)
    out, want = step(model, **kw), step(ref, **kw)
    assert out.loss.dtype == torch.float64
    # the stock loss upcasts its logits with .float(): float32, so float32 tolerances
    torch.testing.assert_close(out.loss, want.loss.double(), rtol=1e-5, atol=0)
    assert_same_grads(model, ref)


def test_gradient_checkpointing():
    model, ref = twins("llama")
    for m in (model, ref):
        # transformers 5 renamed gradient_checkpointing_enable
        enable = getattr(m, "activation_checkpointing_enable", None)
        if enable is None:
            m.gradient_checkpointing_enable({"use_reentrant": False})
        else:
            enable({"use_reentrant": False})
        assert any(getattr(mod, "gradient_checkpointing", False) for mod in m.modules())
    ids, labels, mask = batch(16)
    kw = dict(input_ids=ids, attention_mask=mask, labels=labels)
    out, want = step(model, **kw), step(ref, **kw)
    torch.testing.assert_close(out.loss, want.loss, rtol=1e-5, atol=0)
    assert_same_grads(model, ref)


def test_bfloat16_model_gives_a_float32_loss():
    ref = make("llama").to(torch.bfloat16)
    model = patch(copy.deepcopy(ref))
    ids, labels, _ = batch(17)
    out, want = step(model, input_ids=ids, labels=labels), step(ref, input_ids=ids, labels=labels)
    assert out.loss.dtype == want.loss.dtype == torch.float32
    # bfloat16 logits round differently from the chunks' (float32-accumulated) ones
    torch.testing.assert_close(out.loss, want.loss, rtol=2e-2, atol=0)
    g, w = model.lm_head.weight.grad.float(), ref.lm_head.weight.grad.float()
    assert ((g - w).norm() / w.norm()).item() < 5e-2


def test_shift_labels_given():
    model, ref = twins("qwen2")
    ids, labels, _ = batch(5)
    shift = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:].clone()
    shift[2, 5] = -100
    kw = dict(input_ids=ids, labels=labels, shift_labels=shift)
    out, want = step(model, **kw), step(ref, **kw)
    torch.testing.assert_close(out.loss, want.loss, rtol=1e-5, atol=0)
    assert_same_grads(model, ref)


def test_no_labels_is_the_stock_forward():
    model, ref = twins("gemma2")
    ids, _, mask = batch(6)
    out, want = model(input_ids=ids, attention_mask=mask), ref(input_ids=ids, attention_mask=mask)
    assert type(out.logits) is torch.Tensor
    torch.testing.assert_close(out.logits, want.logits, rtol=0, atol=0)
    assert out.loss is None
    state = model.__dict__["_crossent_patch"]
    assert state.stash is None and not state.capturing
    assert "forward" not in model.lm_head.__dict__
    kept, want_kept = model(input_ids=ids, logits_to_keep=1), ref(input_ids=ids, logits_to_keep=1)
    assert kept.logits.shape == (3, 1, V)
    torch.testing.assert_close(kept.logits, want_kept.logits, rtol=0, atol=0)


def test_generate_is_unchanged():
    model, ref = twins("llama")
    model.eval()
    ref.eval()
    ids = batch(7)[0][:1, :5]
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids, **kw), ref.generate(ids, **kw))


def test_eval_under_no_grad_keeps_real_logits():
    model, ref = twins("mistral")
    model.eval()
    ref.eval()
    ids, labels, mask = batch(8)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        want = ref(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out.logits, want.logits, rtol=0, atol=0)
    # the loss on those logits is crossent's causal_lm_loss: equal up to summation order (the
    # C++ kernel and the torch-ops path round differently)
    torch.testing.assert_close(out.loss, want.loss, rtol=1e-6, atol=0)
    # eval mode with gradients on (or train mode under no_grad) is not pure inference: fused
    fused = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert fused.logits is None
    torch.testing.assert_close(fused.loss, want.loss, rtol=1e-5, atol=0)
    model.train()
    with torch.no_grad():
        assert model(input_ids=ids, labels=labels).logits is None


def test_training_output_has_no_logits_and_tuples_drop_them():
    model, ref = twins("phi3")
    ids, labels, _ = batch(9)
    out = model(input_ids=ids, labels=labels)
    assert out.logits is None and "logits" not in out.keys()
    tup = model(input_ids=ids, labels=labels, return_dict=False)
    want = ref(input_ids=ids, labels=labels, return_dict=False)
    assert len(tup) == len(want) - 1
    torch.testing.assert_close(tup[0], want[0], rtol=1e-5, atol=0)
    # positional labels (6th argument of the forward) are seen too
    pos = model(ids, None, None, None, None, labels)
    assert pos.logits is None


def test_loss_options_reach_linear_cross_entropy():
    ref = make("llama")
    model = patch(copy.deepcopy(ref), z_loss=1e-3, label_smoothing=0.1, chunk_size=7)
    ids, labels, _ = batch(10)
    out = model(input_ids=ids, labels=labels)
    logits = ref(input_ids=ids).logits
    shift = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:].reshape(-1)
    import crossent.torch as ct

    want = ct.cross_entropy(logits.reshape(-1, V), shift, z_loss=1e-3, label_smoothing=0.1)
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=0)


@pytest.mark.parametrize("opts, exc, word", [
    ({"label_smoothing": 2.0}, ValueError, "label_smoothing"),
    ({"z_loss": -1.0}, ValueError, "z_loss"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"impl": "nope"}, ValueError, "impl"),
    ({"reduction": "sum"}, ValueError, "reduction"),
    ({"softcap": 5.0}, ValueError, "softcap"),
    ({"ignore_index": 0}, ValueError, "ignore_index"),
    ({"smoothing": 0.1}, TypeError, "smoothing"),
])
def test_bad_loss_option_is_named(opts, exc, word):
    model = make("llama")
    with pytest.raises(exc, match=word):
        patch(model, **opts)
    assert not is_patched(model)


def test_patch_twice_and_unpatch():
    model = make("llama")
    assert patch(model, z_loss=1e-4) is model
    forward = model.forward
    assert patch(model, z_loss=1e-4) is model and model.forward is forward  # idempotent
    with pytest.raises(ValueError, match="unpatch"):
        patch(model, z_loss=1e-3)
    assert unpatch(model) is model and not is_patched(model)
    assert "forward" not in model.__dict__ and "_loss_function" not in model.__dict__
    ids, labels, _ = batch(11)
    assert model(input_ids=ids, labels=labels).logits is not None  # stock again
    assert unpatch(model) is model


def test_deepcopy_of_a_patched_model_is_patched_and_independent():
    model, ref = twins("llama")
    twin = copy.deepcopy(model)
    assert twin.forward.__self__ is twin and twin._loss_function.__self__ is twin
    ids, labels, _ = batch(12)
    out, want = step(twin, input_ids=ids, labels=labels), step(ref, input_ids=ids, labels=labels)
    assert out.logits is None
    torch.testing.assert_close(out.loss, want.loss, rtol=1e-5, atol=0)
    assert_same_grads(twin, ref)
    assert all(p.grad is None for p in model.parameters())


def test_unsupported_logit_transform_raises():
    model = patch(make("llama"))
    model.lm_head.register_forward_hook(lambda mod, inp, out: out + 1.0)
    ids, labels, _ = batch(13)
    with pytest.raises(NotImplementedError, match="add"):
        model(input_ids=ids, labels=labels)
    state = model.__dict__["_crossent_patch"]
    assert state.stash is None and "forward" not in model.lm_head.__dict__


def test_logits_to_keep_with_labels_mismatch_is_an_error():
    model = patch(make("llama"))
    ids, labels, _ = batch(14)
    with pytest.raises(ValueError, match="logits_to_keep"):
        model(input_ids=ids, labels=labels, logits_to_keep=1)


def ce_inputs(seed, b=3, t=7, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(b, t, V, generator=g)).to(dtype).requires_grad_(True)
    labels = torch.randint(0, V, (b, t), generator=g)
    labels[0, 2:5] = -100
    return logits, labels


@pytest.mark.parametrize("kw", [
    {},
    {"num_items_in_batch": 11},
    {"num_items_in_batch": torch.tensor(11)},
    {"shift_labels": "shifted"},
    {"shift_labels": "shifted", "num_items_in_batch": torch.tensor(9)},
    {"ignore_index": 5},
])
def test_causal_lm_loss_equals_ForCausalLMLoss(kw):
    logits, labels = ce_inputs(20)
    if "ignore_index" in kw:
        labels[labels == -100] = kw["ignore_index"]
    if kw.get("shift_labels") == "shifted":
        kw = {**kw, "shift_labels": torch.roll(labels, 2, dims=1)}
    ref_logits = logits.detach().clone().requires_grad_(True)
    got = causal_lm_loss(logits, labels, V, **kw)
    want = ForCausalLMLoss(ref_logits, labels, V, **kw)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    got.backward()
    want.backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-7)


def test_causal_lm_loss_bfloat16_is_float32():
    logits, labels = ce_inputs(21, dtype=torch.bfloat16)
    got = causal_lm_loss(logits, labels, V)
    want = ForCausalLMLoss(logits.detach(), labels, V)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_causal_lm_loss_as_the_model_loss_function():
    ref = make("qwen3")
    model = copy.deepcopy(ref)
    model.loss_function = causal_lm_loss
    ids, labels, _ = batch(15)
    out, want = step(model, input_ids=ids, labels=labels), step(ref, input_ids=ids, labels=labels)
    torch.testing.assert_close(out.loss, want.loss, rtol=1e-5, atol=0)
    assert_same_grads(model, ref)


def _train(model, tmp_path, name, accumulate=1):
    g = torch.Generator().manual_seed(30)
    data = []
    for i in range(6):
        ids = torch.randint(3, V, (16,), generator=g)
        labels = ids.clone()
        labels[: 2 + i] = -100
        data.append({"input_ids": ids, "labels": labels})
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / name), max_steps=3, per_device_train_batch_size=2,
        report_to=[], use_cpu=True, logging_steps=1, save_strategy="no",
        gradient_accumulation_steps=accumulate, disable_tqdm=True, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_trainer_logs_the_stock_losses(tmp_path, accumulate):
    model, ref = twins("llama")
    widths = []  # what the head returned: 0 is the placeholder of the fused path
    model.lm_head.register_forward_hook(lambda mod, inp, out: widths.append(out.shape[-1]))
    got = _train(model, tmp_path, "patched", accumulate)
    want = _train(ref, tmp_path, "stock", accumulate)
    assert len(widths) >= 3 and set(widths) == {0}
    assert len(got) == len(want) == 3
    assert got == pytest.approx(want, rel=1e-4)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
