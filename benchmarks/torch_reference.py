"""PyTorch reference of the E2URec retain-phase unlearning step, timed.

Why it is shaped this way: this is the baseline `bench` divides by, so it must cost
what the original implementation (github.com/justarter/E2URec, unlearning_e2urec.py
and utils.py) costs per step, not what a tuned PyTorch version would. The original:

* loads the trained model three times: the LoRA student's base (peft wraps it in
  place), the frozen original (remembering teacher) and the augmented model; three
  full copies of the weights sit in memory;
* per retain-phase step calls `get_answer_loss` (student on D_r, for CE),
  `compute_forced_kl` (student on D_f, original and augmented on D_f) and
  `compute_kl` (student on D_r *again*, original on D_r): three student forwards,
  each with `labels=` so the model also computes its own CE, and three teacher
  forwards under no_grad, then one backward through the three student graphs;
* KD is -sum_v softmax(teacher) * log(softmax(student) + 1e-12), averaged over every
  answer position; student in train mode (dropout 0.1 and LoRA dropout 0.05 on),
  teachers in eval mode; AdamW on the adapters; eager PyTorch, fp32.

Weights are random (built from configs, no download); the inputs are random token ids
of length `seq` (no padding, no attention mask, as the original passes none) and a
3-token answer ("Yes . </s>" / "No . </s>"). For the Llama size a sample is
prompt + answer in one causal sequence and the losses use the answer positions.

  python benchmarks/torch_reference.py --size tiny --batch 16 --seq 256 --steps 10 --warmup 2

prints one line `RESULT {json}` on stdout (and writes it to --json if given).
"""
import argparse
import copy
import json
import os
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

ANSWER_LEN = 3  # "Yes" "." "</s>"
T5_SIZES = {  # d_model, layers (enc = dec), heads, d_kv, d_ff
    'tiny': (128, 2, 4, 32, 512),
    'small': (512, 6, 8, 64, 2048),
    'base': (768, 12, 12, 64, 3072),
}
SIZES = tuple(T5_SIZES) + ('llama135m',)


def build_config(size: str, vocab: int | None = None):
  """A transformers config for `size`; `vocab` overrides the vocabulary (tests)."""
  from transformers import LlamaConfig, T5Config
  if size == 'llama135m':  # SmolLM2-135M
    return LlamaConfig(
        vocab_size=vocab or 49152, hidden_size=576, intermediate_size=1536,
        num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
  d_model, layers, heads, d_kv, d_ff = T5_SIZES[size]
  return T5Config(
      vocab_size=vocab or 32128, d_model=d_model, num_layers=layers,
      num_decoder_layers=layers, num_heads=heads, d_kv=d_kv, d_ff=d_ff,
      feed_forward_proj='relu', dropout_rate=0.1, tie_word_embeddings=True,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def build_models(config, device, attn: str = 'eager'):
  """(student, original, augmented): three weight copies, as the original code loads them."""
  from peft import LoraConfig, TaskType, get_peft_model
  from transformers import LlamaForCausalLM, T5ForConditionalGeneration
  causal = config.model_type == 'llama'
  cls = LlamaForCausalLM if causal else T5ForConditionalGeneration
  trained = cls._from_config(config, attn_implementation=attn, dtype=torch.float32)
  original = copy.deepcopy(trained)
  augmented = copy.deepcopy(trained)
  with torch.no_grad():  # the augmented model was fine-tuned on D_f: make it differ a little
    for p in augmented.parameters():
      p.add_(0.01 * torch.randn_like(p))
  for teacher in (original, augmented):
    teacher.requires_grad_(False)
    teacher.eval()
  lora = LoraConfig(
      task_type=TaskType.CAUSAL_LM if causal else TaskType.SEQ_2_SEQ_LM,
      r=16, lora_alpha=32, lora_dropout=0.05,
      target_modules=['q_proj', 'v_proj'] if causal else ['q', 'v'])
  student = get_peft_model(trained, lora)
  student.train()
  return student.to(device), original.to(device), augmented.to(device)


def make_batch(config, batch: int, seq: int, device, generator):
  """Random prompts of `seq` tokens and 3-token answers; labels are -100 off the answer."""
  vocab = config.vocab_size
  yes, no, dot = (2163, 465, 5) if vocab > 2163 else (vocab - 1, vocab - 2, 5)
  eos = config.eos_token_id
  prompt = torch.randint(3, vocab, (batch, seq), generator=generator)
  first = torch.where(torch.rand(batch, generator=generator) < 0.5, yes, no)
  answer = torch.stack([first, torch.full_like(first, dot), torch.full_like(first, eos)], 1)
  if config.model_type == 'llama':  # one causal sequence: prompt + answer
    input_ids = torch.cat([prompt, answer], 1)  # [batch, seq + 3]
    labels = torch.cat([torch.full_like(prompt, -100), answer], 1)
    return {'input_ids': input_ids.to(device), 'labels': labels.to(device)}
  return {'input_ids': prompt.to(device), 'labels': answer.to(device)}  # [batch, seq], [batch, 3]


def answer_logits(model, batch, causal: bool):
  """Logits at the answer positions, [batch, 3, vocab]; the model also computes its own CE."""
  out = model(input_ids=batch['input_ids'], labels=batch['labels'])
  if causal:  # position t predicts token t + 1
    return out.loss, out.logits[:, -ANSWER_LEN - 1:-1]
  return out.loss, out.logits


def kd(teacher_logits, student_logits):
  """-sum softmax(p) log softmax(q), mean over answer positions (the original's formula)."""
  p = F.softmax(teacher_logits, -1)
  q = F.softmax(student_logits, -1)
  return -(p * torch.log(q + 1e-12)).sum(-1).mean()


def e2urec_step(student, original, augmented, optimizer, retain, forget, causal,
                alpha: float = 2.0, weight: float = 0.6):
  """One retain-phase step in the original's order: get_answer_loss, compute_forced_kl, compute_kl."""
  optimizer.zero_grad()
  retain_ce, _ = answer_logits(student, retain, causal)  # student pass 1
  _, student_forget = answer_logits(student, forget, causal)  # student pass 2
  with torch.no_grad():
    _, orig_forget = answer_logits(original, forget, causal)  # teacher pass 1
    _, aug_forget = answer_logits(augmented, forget, causal)  # teacher pass 2
    forgetting_teacher = orig_forget - alpha * F.relu(aug_forget - orig_forget)
  forget_kd = kd(forgetting_teacher, student_forget)
  _, student_retain = answer_logits(student, retain, causal)  # student pass 3
  with torch.no_grad():
    _, orig_retain = answer_logits(original, retain, causal)  # teacher pass 3
  retain_kd = kd(orig_retain, student_retain)
  loss = weight * (retain_ce + retain_kd) + (1 - weight) * forget_kd
  loss.backward()
  optimizer.step()
  return loss.detach()


def run_reference(size='tiny', batch=16, seq=256, steps=10, warmup=2, device=None,
                  vocab=None, attn='eager', seed=0) -> dict:
  """Builds the models, runs `warmup` untimed then `steps` timed steps; returns the result dict."""
  device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
  cuda = device.type == 'cuda'
  if not cuda:
    torch.set_num_threads(os.cpu_count())
  torch.manual_seed(seed)
  config = build_config(size, vocab)
  causal = config.model_type == 'llama'
  student, original, augmented = build_models(config, device, attn)
  trainable = [p for p in student.parameters() if p.requires_grad]
  optimizer = torch.optim.AdamW(trainable, lr=1e-3)
  generator = torch.Generator().manual_seed(seed)
  batches = [(make_batch(config, batch, seq, device, generator),
              make_batch(config, batch, seq, device, generator)) for _ in range(2)]

  def sync():
    if cuda:
      torch.cuda.synchronize(device)

  t0 = time.perf_counter()
  for i in range(warmup):
    e2urec_step(student, original, augmented, optimizer, *batches[i % 2], causal)
  sync()
  warmup_s = time.perf_counter() - t0
  if cuda:
    torch.cuda.reset_peak_memory_stats(device)
  t0 = step_t0 = time.perf_counter()
  step_ms = []  # per-step wall times; exact on CPU only (GPU steps are queued asynchronously)
  for i in range(steps):
    loss = e2urec_step(student, original, augmented, optimizer, *batches[i % 2], causal)
    step_ms.append(1000 * (time.perf_counter() - step_t0))
    step_t0 = time.perf_counter()
  sync()
  elapsed = time.perf_counter() - t0
  loss = float(loss)
  if cuda:
    peak = torch.cuda.max_memory_allocated(device)
  else:  # ru_maxrss is in KiB on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == 'darwin' else 1024)
  examples = 2 * batch * steps  # a step sees `batch` retain and `batch` forget samples
  return {
      'name': 'reference_e2urec_step', 'size': size, 'batch': batch, 'seq': seq,
      'vocab': config.vocab_size, 'steps': steps, 'warmup': warmup,
      'examples_per_s': examples / elapsed,
      'tokens_per_s': examples * (seq + ANSWER_LEN) / elapsed,
      'ms_per_step': 1000 * elapsed / steps,
      # On a shared CPU the median step is steadier than the mean; examples/s from it too.
      'ms_per_step_median': None if cuda else statistics.median(step_ms),
      'examples_per_s_median': None if cuda else 2 * batch * 1000 / statistics.median(step_ms),
      'step_ms': None if cuda else [round(t, 1) for t in step_ms],
      'compile_s': None, 'warmup_s': warmup_s, 'mfu': None,
      'peak_memory_bytes': int(peak),
      'peak_memory_kind': 'cuda_max_memory_allocated' if cuda else 'ru_maxrss',
      'trainable_params': sum(p.numel() for p in trainable),
      'total_params': sum(p.numel() for p in student.parameters()),
      'final_loss': loss,
      'passes_per_step': {'student': 3, 'teacher': 3},
      'env': {'framework': 'torch', 'torch': torch.__version__, 'device': str(device),
              'device_name': torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
              'threads': torch.get_num_threads(), 'dtype': 'float32', 'attn': attn},
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', choices=SIZES, default='tiny')
  parser.add_argument('--batch', type=int, default=16, help='retain and forget samples per step, each')
  parser.add_argument('--seq', type=int, default=256, help='input (prompt) tokens per sample')
  parser.add_argument('--steps', type=int, default=10, help='timed steps')
  parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
  parser.add_argument('--device', default=None, help='cpu | cuda (default: cuda if available)')
  parser.add_argument('--vocab', type=int, default=None, help='override the vocabulary size (tests)')
  parser.add_argument('--attn', choices=('eager', 'sdpa'), default='eager', help='attention implementation')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--json', default=None, help='also write the result here')
  args = parser.parse_args(argv)
  result = run_reference(args.size, args.batch, args.seq, args.steps, args.warmup,
                         args.device, args.vocab, args.attn, args.seed)
  line = json.dumps(result)
  print('RESULT ' + line, flush=True)
  if args.json:
    with open(args.json, 'w') as f:
      f.write(line + '\n')
  return result


if __name__ == '__main__':
  main()
