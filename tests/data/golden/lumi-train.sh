#!/bin/bash
#SBATCH --job-name=train
#SBATCH --partition=standard-g
#SBATCH --account=project_465000123
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=7
#SBATCH --gpus-per-node=8
#SBATCH --time=00:30:00
#SBATCH --output=stdout.log
#SBATCH --error=stderr.log
#SBATCH --comment=aifactory:0123456789abcdef0123456789abcdef

# aifactory job train on lumi (standard-g), id 01234567
AIF_JOB_DIR="${SLURM_SUBMIT_DIR:-$PWD}"
AIF_JOB_ID=01234567
AIF_JOB_TOKEN=0123456789abcdef0123456789abcdef
AIF_SITE=lumi
export AIF_JOB_DIR AIF_JOB_ID AIF_JOB_TOKEN AIF_SITE
cd "$AIF_JOB_DIR" || exit 1
# The script records its own exit code, so the result is known even when the scheduler has
# forgotten the job.
_aif_rc_file="$AIF_JOB_DIR/exit_code${SLURM_ARRAY_TASK_ID:+.$SLURM_ARRAY_TASK_ID}"
_aif_finish() {
  local rc=$?
  printf '%s\n' "$rc" > "$_aif_rc_file.tmp" && mv -f "$_aif_rc_file.tmp" "$_aif_rc_file"
  exit "$rc"
}
trap _aif_finish EXIT

# modules: the site's base modules, then the spec's
module load LUMI/25.03 partition/G || { echo "aifactory: module load failed" >&2; exit 1; }

# environment
export NCCL_SOCKET_IFNAME=hsn
export NCCL_NET_GDR_LEVEL=3
export CXI_FORK_SAFE=1
export CXI_FORK_SAFE_HP=1
export FI_CXI_DISABLE_CQ_HUGETLB=1
export OMP_NUM_THREADS=7
export EPOCHS=2
export MIOPEN_USER_DB_PATH=/tmp/miopen-cache

# LUMI-G binding: task i -> GCD i, 7 cores of the CCD closest to it (core 0 of each CCD is reserved)
CPU_BIND=mask_cpu:fe000000000000,fe00000000000000,fe0000,fe000000,fe,fe00,fe00000000,fe0000000000
AIF_SELECT_GPU="$AIF_JOB_DIR/select_gpu.$SLURM_JOB_ID"  # one per job id: array elements share the dir
cat > "$AIF_SELECT_GPU" << 'AIF_SELECT_GPU_EOF'
#!/bin/bash
export ROCR_VISIBLE_DEVICES=$SLURM_LOCALID
exec "$@"
AIF_SELECT_GPU_EOF
chmod +x "$AIF_SELECT_GPU"

# setup (once, before the launch)
eval 'echo "setup on $(hostname): $(nproc) cores visible"' || { _aif_rc=$?; echo "aifactory: setup failed (exit $_aif_rc)" >&2; exit "$_aif_rc"; }


# rendezvous for distributed frameworks (PyTorch env://, torchrun)
AIF_MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
export AIF_MASTER_ADDR MASTER_ADDR="${MASTER_ADDR:-$AIF_MASTER_ADDR}" MASTER_PORT="${MASTER_PORT:-29500}"
export WORLD_SIZE=16

# launch
srun --nodes=2 --ntasks=16 --cpus-per-task=7 --cpu-bind="$CPU_BIND" "$AIF_SELECT_GPU" bash -c 'python3 train.py --epochs "$EPOCHS"'
