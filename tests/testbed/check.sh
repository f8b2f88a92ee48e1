#!/usr/bin/env bash
# shellcheck disable=SC2016  # remote commands are single-quoted on purpose
# Quick smoke check (< 30 s) of a running test bed, entirely over ssh as the test user:
# a 2-node GPU job with modules, a job through the jump host, a rejected account, a missing module,
# node names that resolve, PyTorch for jobs, another site's QoS rule.
# Exits non-zero if anything fails.
set -euo pipefail
_T0=${EPOCHREALTIME/./}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/testbed/lib.sh
. "$HERE/lib.sh"

SSHC=(ssh -F "$CLIENT/ssh_config" -o ConnectTimeout=10)
failures=0
ok() { log "ok: $*"; }
bad() { log "FAIL: $*"; failures=$((failures + 1)); }

# wait_job HOST JOBID SECONDS: prints the job's final allocation State from sacct.
wait_job() {
    "${SSHC[@]}" "$1" "for i in \$(seq $(($3 * 5))); do
        s=\$(sacct -nXP -j $2 -o State 2>/dev/null | head -n1)
        case \$s in COMPLETED|FAILED*|CANCELLED*|TIMEOUT|OUT_OF_MEMORY|NODE_FAIL|BOOT_FAIL|DEADLINE|PREEMPTED) echo \"\$s\"; exit 0;; esac
        sleep 0.2
    done; echo \"still '\$s' after $3 s\""
}

[[ -f $CLIENT/ssh_config ]] || { log "FAIL: $CLIENT/ssh_config missing: is the test bed started?"; exit 1; }

# 0. ssh with strict host key checking; the host key is the recorded one.
if out=$("${SSHC[@]}" testbed 'echo "$USER@$(hostname) $(sinfo -h -o "%P" | tr "\n" " ")"' 2>&1); then
    ok "ssh testbed: $out"
else
    bad "ssh testbed: $out"
fi

# 1. A LUMI-style 2-node GPU job.
script=$(cat <<'JOB'
#!/bin/bash
#SBATCH --job-name=testbed-check-gpu
#SBATCH --partition=standard-g
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --account=project_465000001
#SBATCH --time=00:05:00
#SBATCH --output=testbed-check/%x-%j.out
set -eo pipefail
module load LUMI/25.03 partition/G
echo "stack: $(testbed-lumi-stack)"
srun bash -c 'echo $SLURM_PROCID $ROCR_VISIBLE_DEVICES'
JOB
)
gpu_id=$("${SSHC[@]}" testbed 'mkdir -p testbed-check && sbatch --parsable' <<<"$script" 2>&1) || true
gpu_id=${gpu_id%%;*}
if [[ $gpu_id =~ ^[0-9]+$ ]]; then ok "GPU job submitted: $gpu_id"; else bad "GPU job submission: $gpu_id"; gpu_id=; fi

# 2. A job submitted through the jump host, on the second account.
jump_id=$("${SSHC[@]}" testbed-via-jump \
    'sbatch --parsable --job-name=testbed-check-jump --partition=debug --account=project_465000002 --time=1 --output=testbed-check/%x-%j.out --wrap="echo via-jump \$SLURM_JOB_ACCOUNT \$SLURMD_NODENAME"' 2>&1) || true
jump_id=${jump_id%%;*}
if [[ $jump_id =~ ^[0-9]+$ ]]; then ok "job submitted via testbed-via-jump: $jump_id"; else bad "submission via testbed-via-jump: $jump_id"; jump_id=; fi

# 3. An unknown account is rejected at submit.
if out=$("${SSHC[@]}" testbed 'sbatch --parsable --account=project_999999999 --wrap=true' 2>&1); then
    bad "--account=project_999999999 was accepted: $out"
elif [[ $out == *"Invalid account"* ]]; then
    ok "--account=project_999999999 rejected: $out"
else
    bad "--account=project_999999999 failed without 'Invalid account': $out"
fi

# 4. A missing module fails as on the real site.
if out=$("${SSHC[@]}" testbed 'module load nosuch/1.0' 2>&1); then
    bad "module load nosuch/1.0 succeeded: $out"
elif [[ $out == *"unknown"*"nosuch/1.0"* ]]; then
    ok "module load nosuch/1.0 fails (exit 1, 'unknown')"
else
    bad "module load nosuch/1.0: unexpected message: $out"
fi

# 5. Node names resolve, each to its own loopback address (so a rendezvous on a node name works).
out=$("${SSHC[@]}" testbed 'getent hosts nid005000 nid005001 gn001 gn001i' 2>&1) || true
if [[ $(awk '$1 ~ /^127\.0\.[12]\./ {print $1}' <<<"$out" | sort -u | wc -l) == 4 ]]; then
    ok "node names resolve: $(tr '\n' ' ' <<<"$out")"
else
    bad "node names do not resolve to distinct 127.0.1.x/127.0.2.x addresses: $out"
fi

# 6. PyTorch (CPU) for jobs, runnable by the test user.
out=$("${SSHC[@]}" testbed 'module load pytorch/2.13.0-cpu && python3 -c "import torch, torch.distributed as d; print(torch.__version__, d.is_gloo_available())"' 2>&1) || true
if [[ $out == "2.13.0+cpu True" ]]; then ok "module pytorch/2.13.0-cpu: torch $out"; else bad "PyTorch for the test user: $out"; fi

# 7. Another site's rule: MareNostrum 5's partition acc takes only its QoS (acc_ehpc, acc_debug).
if out=$("${SSHC[@]}" testbed 'sbatch --parsable -p acc -A ehpc191 --gres=gpu:1 -o /dev/null --wrap=true' 2>&1); then
    bad "acc without a QoS was accepted: $out"
elif [[ $out == *"Invalid qos specification"* ]]; then
    ok "MareNostrum 5 acc without --qos rejected: $out"
else
    bad "acc without a QoS failed without 'Invalid qos specification': $out"
fi

# 8. Results of the jobs.
if [[ -n $gpu_id ]]; then
    state=$(wait_job testbed "$gpu_id" 20 2>&1) || true
    if [[ $state == COMPLETED ]]; then ok "GPU job $gpu_id COMPLETED in sacct"; else bad "GPU job $gpu_id: $state"; fi
    out=$("${SSHC[@]}" testbed "cat testbed-check/testbed-check-gpu-$gpu_id.out; echo '--- sacct'; sacct -nXP -j $gpu_id -o NNodes,NodeList,AllocTRES" 2>&1) || true
    expected="stack: LUMI/25.03 partition=G"
    for r in $(seq 0 15); do expected+=$'\n'"$r 0,1,2,3,4,5,6,7"; done
    got=$(sed '/^--- sacct/,$d' <<<"$out" | { read -r first; echo "$first"; sort -n; })
    if [[ $got == "$expected" ]]; then
        ok "GPU job output: 16 tasks, each ROCR_VISIBLE_DEVICES=0,...,7, LUMI/25.03 partition/G loaded"
    else
        bad "GPU job output differs from the expected one:"$'\n'"$out"
    fi
    acct=$(sed -n '/^--- sacct/{n;p}' <<<"$out")
    # (NodeList is not compared: for a job this short, sacct shows only the first node for ~2 s.)
    if [[ $acct == "2|"*"gres/gpu=16"* ]]; then ok "sacct: $acct"; else bad "sacct NNodes/NodeList/AllocTRES: $acct"; fi
fi
if [[ -n $jump_id ]]; then
    state=$(wait_job testbed-via-jump "$jump_id" 20 2>&1) || true
    out=$("${SSHC[@]}" testbed-via-jump "cat testbed-check/testbed-check-jump-$jump_id.out" 2>&1) || true
    if [[ $state == COMPLETED && $out == "via-jump project_465000002 nid00100"* ]]; then
        ok "job $jump_id via the jump host COMPLETED: $out"
    else
        bad "job $jump_id via the jump host: state '$state', output '$out'"
    fi
fi

if ((failures)); then
    log "check FAILED ($failures failures) in $(elapsed) s"
    exit 1
fi
log "check passed in $(elapsed) s"
