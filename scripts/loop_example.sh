#!/usr/bin/env bash
# The open-ended loop of issue 12 with the real local pool and no gold answer anywhere:
# chat logs -> judge-scored observations -> DARS router + dueling policy -> caproute serve ->
# feedback (openai client) -> kill -9, restart -> feedback export -> a retrained router.
# The output quoted in README.md and docs/*.md comes from this script. About 3-5 minutes on 2 busy cores.
set -euo pipefail
cd "${ROOT:-$(dirname "$0")/..}"
PY=${PY:-.venv/bin/python}
CAPROUTE=${CAPROUTE:-.venv/bin/caproute}
WORK=${WORK:-.caproute/loop}
LOOP_PORT=${LOOP_PORT:-8377}  # not PORT: llama.cpp servers read $PORT from the environment
rm -rf "$WORK"; mkdir -p "$WORK"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

# 1. chat logs (OpenAI chat format); the last conversation is a duplicate of the first
cat > "$WORK/chat.jsonl" <<'JSONL'
{"messages": [{"role": "user", "content": "Give me one tip for sleeping better."}]}
{"messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France?"}]}
{"messages": [{"role": "user", "content": "Write a haiku about rain."}]}
{"messages": [{"role": "user", "content": "I want to learn Python."}, {"role": "assistant", "content": "Great choice!"}, {"role": "user", "content": "Where should I start?"}]}
{"messages": [{"role": "user", "content": "Name three colours of the rainbow."}]}
{"messages": [{"role": "user", "content": "Give me one tip for sleeping better."}]}
JSONL

# 2. two pool models; the judge is the pool's SmolLM2
for try in 1 2 3; do  # a busy machine may need more than the 120 s start-up allowance
  $CAPROUTE pool up --models smollm2-135m,smollm2-135m-q2k --rewriter smollm2-135m-q2k --port-base 0 \
    --workdir "$WORK/pool" --config-out "$WORK/pool.yaml" > /dev/null && break
done
trap '$CAPROUTE pool down --workdir "$WORK/pool" > /dev/null; kill -9 ${SERVE:-0} 2>/dev/null || true' EXIT
$PY - "$WORK/pool.yaml" <<'PYEOF'
import sys, yaml
p = sys.argv[1]; cfg = yaml.safe_load(open(p))
cfg["rewriter"] = {"model": "smollm2-135m-q2k", "max_attempts": 1, "max_tokens": 32}
cfg["tasks"] = {"chat": {"prompt_template": "{question}", "scorer": "judge", "max_tokens": 16,
                         "scorer_args": {"judge": "smollm2-135m", "max_tokens": 12}}}
yaml.safe_dump(cfg, open(p, "w"))
PYEOF

echo '$ caproute collect --config pool.yaml --queries chat.jsonl --store obs.duckdb --task chat --rewrites 1 --decodes 2'
$CAPROUTE collect --config "$WORK/pool.yaml" --queries "$WORK/chat.jsonl" --store "$WORK/obs.duckdb" --task chat \
  --rewrites 1 --decodes 2 --no-similarity-check --progress-every 600 | grep -v "^ *$"
echo '$ caproute train --store obs.duckdb --dataset chat --router knn --out router'
$CAPROUTE train --store "$WORK/obs.duckdb" --dataset chat --router knn --out "$WORK/router"
echo '$ caproute duel init --store obs.duckdb --dataset chat --embeddings minilm --out policy'
$CAPROUTE duel init --store "$WORK/obs.duckdb" --dataset chat --embeddings minilm --out "$WORK/policy"

serve() {
  $CAPROUTE serve --router "chat-knn=$WORK/router" --pool "$WORK/pool.yaml" --insecure-local --port "$LOOP_PORT" \
    --feedback-db "$WORK/fb.sqlite3" --log-store "$WORK/requests.sqlite3" \
    --duel-policy "$WORK/policy" --duel-state-out "$WORK/policy-online" >> "$WORK/serve.log" 2>&1 &
  SERVE=$!
  until curl -sf "http://127.0.0.1:$LOOP_PORT/healthz" > /dev/null; do sleep 0.5; done
}
echo '$ caproute serve --router chat-knn=router --pool pool.yaml --duel-policy policy --duel-state-out policy-online --log-store requests.sqlite3 ...'
serve
$PY - "$LOOP_PORT" <<'PYEOF'
import sys, httpx, openai
c = openai.OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="x", max_retries=0, timeout=120)
fb = lambda body: c.post("/feedback", body=body, cast_to=httpx.Response).json()
for q in ["What is the capital of France?", "Write a haiku about rain.", "Name three colours of the rainbow."]:
    for m, score in (("smollm2-135m", 1.0), ("smollm2-135m-q2k", 0.25)):
        r = c.chat.completions.create(model=m, messages=[{"role": "user", "content": q}], max_tokens=16)
        fb({"response_id": r.model_extra["caproute"]["response_id"], "score": score})
r = c.chat.completions.with_raw_response.create(model="caproute/chat-knn", max_tokens=16,
    messages=[{"role": "user", "content": "Write a haiku about rain."}])
print("routed:", r.headers["x-caproute-model"], repr(r.parse().choices[0].message.content))
for q in ["What is the capital of France?", "Name three colours of the rainbow."]:
    d = c.chat.completions.create(model="caproute/duel", messages=[{"role": "user", "content": q}], max_tokens=8)
    duel = d.model_extra["caproute"]["duel"]
    res = fb({"winner_id": duel["response_ids"][0], "loser_id": duel["response_ids"][1]})
    print("duel:", duel["models"], "policy_step", duel["policy_step"], "-> policy_updated", res["policy_updated"])
PYEOF
$PY -c "from caproute.bandits import load_policy; p = load_policy('$WORK/policy-online'); print('saved policy: t =', p.t_, p.checkpoint_)"
echo '$ kill -9 <caproute serve>; caproute serve ... (same flags)'
kill -9 $SERVE; wait $SERVE 2>/dev/null || true
serve
$PY -c "from caproute.bandits import load_policy; p = load_policy('$WORK/policy-online'); print('after restart: t =', p.t_)"
$PY - "$LOOP_PORT" <<'PYEOF'
import sys, httpx, openai
c = openai.OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="x", max_retries=0, timeout=120)
d = c.chat.completions.create(model="caproute/duel", messages=[{"role": "user", "content": "Write a haiku about rain."}], max_tokens=8)
duel = d.model_extra["caproute"]["duel"]
res = c.post("/feedback", body={"winner_id": duel["response_ids"][0], "loser_id": duel["response_ids"][1]},
             cast_to=httpx.Response).json()
print("duel:", duel["models"], "policy_step", duel["policy_step"], "-> policy_updated", res["policy_updated"])
PYEOF
kill $SERVE; wait $SERVE 2>/dev/null || true; SERVE=0
$PY -c "from caproute.bandits import load_policy; p = load_policy('$WORK/policy-online'); print('saved policy: t =', p.t_)"

echo '$ caproute feedback export --feedback-db fb.sqlite3 --log-store requests.sqlite3 --store feedback.duckdb --pairs pairs.parquet'
$CAPROUTE feedback export --feedback-db "$WORK/fb.sqlite3" --log-store "$WORK/requests.sqlite3" \
  --store "$WORK/feedback.duckdb" --pairs "$WORK/pairs.parquet"
echo '$ caproute train --store feedback.duckdb --dataset feedback --router knn --out router-v2'
$CAPROUTE train --store "$WORK/feedback.duckdb" --dataset feedback --router knn --out "$WORK/router-v2"
echo '$ caproute route --router router-v2 "What is the capital of France?"'
$CAPROUTE route --router "$WORK/router-v2" "What is the capital of France?"
