# What the test bed offers besides LUMI: the partitions, QoS, accounts and directories of every
# GPU site of the built-in profiles (profiles/*.yaml), so that tests/profiles/<site>-bed.yaml
# (extends: <site> + this bed's ssh block) renders and runs a job here as that site.
# Sourced by start.sh (after the node lists are known); data only, plus two small helpers.
# shellcheck shell=bash disable=SC2034
#
# Names are shared where two sites use the same one (one Slurm cluster has one partition `gpu`,
# one `booster`, one QoS `long`): the limits are the larger site's, and the profile's own limit is
# checked by aifactory before anything reaches Slurm. Values below name their site and source
# (the profile's comment, sites.md); "bed" marks a choice of the test bed where the source is silent.

# Accounts of the other sites: NAME|QOS list (the first is the default QoS)|what it is (for the reader).
# Slurm stores account names in lower case and lower-cases --account too (Leonardo, Karolina).
SITE_ACCOUNTS=(
    "exalab|normal|JSC budget (JUPITER, JEDI, JUWELS Booster; profiles' example)"
    "aifac_f01_001|normal,boost_qos_dbg,boost_qos_lprod,boost_qos_bprod|Leonardo (AIFAC_F01_001)"
    "ehpc191|normal,acc_ehpc,acc_debug,gp_ehpc,gp_debug|MareNostrum 5 EuroHPC group"
    "p200000|normal,default,long,short,test,dev|MeluXina project"
    "eu-25-10|normal|Karolina project (EU-25-10)"
    "d2026d06-166-users|normal|Vega group"
    "f202500017aivlabdeucaliong|normal|Deucalion project, A100 partitions (suffix g)"
    "f202500017aivlabdeucalionx|normal|Deucalion project, x86 partitions (suffix x)"
    "ehpc-aif-2026pg01-905|normal,ehpc-aif-2026pg01-905|Discoverer+ project (its QoS has the same name)"
)

# QoS: NAME|sacctmgr settings. DenyOnLimit: a job over a limit is refused at submit, with the reason.
SITE_QOS=(
    # Leonardo Booster (profile: 3P-copy of the CINECA Booster Section)
    "boost_qos_dbg|MaxWall=00:30:00 MaxTRESPerUser=node=2,cpu=64 Flags=DenyOnLimit"
    "boost_qos_lprod|MaxWall=4-00:00:00 MaxTRESPerUser=node=3 Flags=DenyOnLimit"
    "boost_qos_bprod|MaxWall=1-00:00:00 MinTRESPerJob=node=65 MaxTRESPerJob=node=256 Flags=DenyOnLimit"
    # MareNostrum 5 (3P): acc_ehpc 72 h; the debug QoS limits are bed choices
    "acc_ehpc|MaxWall=3-00:00:00 Flags=DenyOnLimit"
    "acc_debug|MaxWall=02:00:00 Flags=DenyOnLimit"
    "gp_ehpc|MaxWall=3-00:00:00 Flags=DenyOnLimit"
    "gp_debug|MaxWall=02:00:00 Flags=DenyOnLimit"
    # MeluXina (OFF-T): default 2 days, long 6 days (Lucia's long: 168 h, so 7 days here)
    "default|MaxWall=2-00:00:00 Flags=DenyOnLimit"
    "long|MaxWall=7-00:00:00 Flags=DenyOnLimit"
    "short|MaxWall=06:00:00 Flags=DenyOnLimit"
    "test|MaxWall=00:30:00 Flags=DenyOnLimit"
    "dev|MaxWall=06:00:00 Flags=DenyOnLimit"
    # Discoverer+ (3P): the project QoS, seen capping jobs at 4 h
    "ehpc-aif-2026pg01-905|MaxWall=04:00:00 Flags=DenyOnLimit"
)

# Partitions: NAME|NODES (acc = the NVIDIA-like nodes, cpu = the CPU nodes)|options.
SITE_PARTITIONS=(
    # JUPITER / JUWELS Booster share `booster` (whole nodes at JSC); JEDI's is `all`
    "booster|acc|MaxTime=1-00:00:00 DefaultTime=01:00:00 OverSubscribe=EXCLUSIVE"
    "develbooster|acc|MaxTime=02:00:00 MaxNodes=4 OverSubscribe=EXCLUSIVE"
    "largebooster|acc|MinNodes=385 MaxTime=1-00:00:00 OverSubscribe=EXCLUSIVE"
    "all|acc|MaxTime=1-00:00:00 OverSubscribe=EXCLUSIVE"
    # Leonardo: one partition, the QoS picks the limits; CPU: the serial default and DCGP
    "boost_usr_prod|acc|MaxTime=4-00:00:00 AllowQos=normal,boost_qos_dbg,boost_qos_lprod,boost_qos_bprod"
    "lrd_all_serial|cpu|MaxTime=04:00:00 MaxNodes=1"
    "dcgp_usr_prod|cpu|MaxTime=1-00:00:00"
    # MareNostrum 5: the QoS is required (no `normal` on these partitions)
    "acc|acc|MaxTime=3-00:00:00 AllowQos=acc_ehpc,acc_debug"
    "gpp|cpu|MaxTime=3-00:00:00 AllowQos=gp_ehpc,gp_debug"
    # MeluXina, Vega and Lucia: `gpu`; MeluXina and Vega: `cpu`
    "gpu|acc|MaxTime=7-00:00:00"
    "cpu|cpu|MaxTime=2-00:00:00"
    # Karolina (walltimes not in the sources)
    "qgpu|acc|MaxTime=2-00:00:00"
    "qgpu_exp|acc|MaxTime=01:00:00"
    "qgpu_big|acc|MaxTime=2-00:00:00"
    "qgpu_free|acc|MaxTime=2-00:00:00 OverSubscribe=EXCLUSIVE"
    "qgpu_preempt|acc|MaxTime=2-00:00:00"
    "qcpu|cpu|MaxTime=2-00:00:00"
    # Deucalion: the account suffix follows the partition (g: A100, x: x86)
    "normal-a100-40|acc|MaxTime=2-00:00:00 MaxNodes=4 AllowAccounts=f202500017aivlabdeucaliong"
    "normal-a100-80|acc|MaxTime=2-00:00:00 MaxNodes=4 AllowAccounts=f202500017aivlabdeucaliong"
    "dev-a100-40|acc|MaxTime=04:00:00 MaxNodes=1 AllowAccounts=f202500017aivlabdeucaliong"
    "dev-a100-80|acc|MaxTime=04:00:00 MaxNodes=1 AllowAccounts=f202500017aivlabdeucaliong"
    "normal-x86|cpu|MaxTime=2-00:00:00 OverSubscribe=EXCLUSIVE AllowAccounts=f202500017aivlabdeucalionx"
    "dev-x86|cpu|MaxTime=04:00:00 OverSubscribe=EXCLUSIVE AllowAccounts=f202500017aivlabdeucalionx"
    # Discoverer+: its partition names are not in the sources and the profile names none; the
    # bed's job_submit.lua sends a Discoverer+ project's jobs that name no partition here
    "tb-discoverer|acc|MaxTime=1-00:00:00 AllowQos=ehpc-aif-2026pg01-905"
    # Lucia: ia (8 A100 80 GB), debug-gpu; batch (whole nodes, one user each) with QoS normal/long
    "ia|acc|MaxTime=2-00:00:00"
    "debug-gpu|acc|MaxTime=01:00:00"
    "batch|cpu|MaxTime=7-00:00:00 ExclusiveUser=YES AllowQos=normal,long"
)

# Project directories that the profiles' workdir templates need (owner: the test user, 2770).
SITE_DIRS=(
    /leonardo_work/AIFAC_F01_001        # Leonardo: /leonardo_work/{account}
    /gpfs/scratch/ehpc191               # MareNostrum 5: /gpfs/scratch/{account}
    /project/scratch/p200000            # MeluXina: /project/scratch/{account}
    /valhalla/projects/ehpc-aif-2026pg01-905/scratch   # Discoverer+: /valhalla/projects/{account}/scratch
    /p/scratch/exalab                   # JSC $SCRATCH (/p/scratch/<project>)
    /p/project1/exalab                  # JSC $PROJECT (/p/project1/<project>)
    /e/scratch/exalab                   # JUPITER: /e/scratch/{account}
    /scratch/project/eu-25-10           # Karolina: /scratch/project/{account_lower}
    /projects/F202500017AIVLABDEUCALION # Deucalion: /projects/{project_upper}
)

# job_submit.lua: the one site rule the bed needs a submit plugin for.
site_job_submit_lua() {
    cat <<'EOF'
-- Written by tests/testbed/start.sh (sites.sh). Slurm's job_submit/lua plugin, as sites use it.
-- Discoverer+: jobs name no partition (the partition names are not in the sources, so the profile
-- renders none); there they go to the machine's GPU default. Here the default is LUMI's CPU
-- partition `small`, so a Discoverer+ project's job without a partition goes to tb-discoverer.
function slurm_job_submit(job_desc, part_list, submit_uid)
   if job_desc.partition == nil and job_desc.account ~= nil
      and string.find(string.lower(job_desc.account), "^ehpc%-aif%-") then
      job_desc.partition = "tb-discoverer"
      slurm.log_info("testbed job_submit.lua: Discoverer+ account %s -> partition tb-discoverer", job_desc.account)
   end
   return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
   return slurm.SUCCESS
end
EOF
}

# The partition lines of slurm.conf for SITE_PARTITIONS (ACC_LIST, CPU_LIST: node lists).
site_partition_lines() {
    local entry name nodes opts
    for entry in "${SITE_PARTITIONS[@]}"; do
        IFS='|' read -r name nodes opts <<<"$entry"
        case $nodes in
        acc) nodes=$ACC_LIST ;;
        cpu) nodes=$CPU_LIST ;;
        *) die "sites.sh: partition $name: unknown node set '$nodes'" ;;
        esac
        echo "PartitionName=$name Nodes=$nodes DefaultTime=00:15:00 $opts State=UP"
    done
}
