// SPDX-License-Identifier: GPL-2.0
/*
 * dell-milspec: Dell MIL-SPEC platform status driver
 *
 * Reports the health of the driver and the platform Mode 5 security level
 * through /proc/milspec/status (stable "key: value" lines for programs) and
 * /proc/milspec/summary (the historic human-readable view).  The Mode 5
 * level is a writable module parameter, so a supervisor can read it from the
 * running module and hand it to the next one across an unload/load swap.
 *
 * The interface is documented in docs/kmod.md.
 *
 * Test builds (make FAULT=<name>) compile in one injected misbehaviour; see
 * the MILSPEC_FAULT_* blocks.  A production build contains none of them.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/dmi.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/timekeeping.h>
#include <linux/types.h>

#ifndef MILSPEC_VERSION
#error "MILSPEC_VERSION is set by kmod/Kbuild (from kmod/VERSION or VERSION=)"
#endif

#if defined(MILSPEC_FAULT_WARN)
#define MILSPEC_FAULT "warn"
#elif defined(MILSPEC_FAULT_OOPS)
#define MILSPEC_FAULT "oops"
#elif defined(MILSPEC_FAULT_SELFTEST)
#define MILSPEC_FAULT "selftest"
#elif defined(MILSPEC_FAULT_BUSY)
#define MILSPEC_FAULT "busy"
#elif defined(MILSPEC_FAULT_PANIC)
#define MILSPEC_FAULT "panic"
#elif defined(MILSPEC_FAULT_SLOWINIT)
#define MILSPEC_FAULT "slowinit"
#elif defined(MILSPEC_FAULT_DEGRADED)
#define MILSPEC_FAULT "degraded"
#elif defined(MILSPEC_FAULT_WARNLATER)
#define MILSPEC_FAULT "warnlater"
#endif

#if defined(MILSPEC_FAULT_OOPS) || defined(MILSPEC_FAULT_PANIC)
#define MILSPEC_FAULT_THREAD
#include <linux/kthread.h>
#include <linux/sched.h>
#define MILSPEC_FAULT_DELAY_MS	200
#endif

#ifdef MILSPEC_FAULT_SLOWINIT
#include <linux/delay.h>
#define MILSPEC_FAULT_SLOWINIT_MS	2000
#endif

#define MILSPEC_PROC_DIR	"milspec"
#define MILSPEC_MODE5_MAX	3
#define MILSPEC_SCRATCH_SIZE	256
#define MILSPEC_PATTERN(i)	((u8)((i) ^ 0xa5))

enum milspec_state {
	MILSPEC_STATE_OK,
	MILSPEC_STATE_DEGRADED,
	MILSPEC_STATE_FAILED,
};

/* Everything one load of the module owns; freed in milspec_exit(). */
struct milspec {
	struct proc_dir_entry *dir;
	struct proc_dir_entry *status;
	struct proc_dir_entry *summary;
	u8 *scratch;
	u64 loaded_at;
	atomic_t errors;
	bool selftest_ok;
	bool forced;
#ifdef MILSPEC_FAULT_THREAD
	struct task_struct *fault_thread;
	u32 *fault_null;		/* stays NULL: the oops build writes to it */
#endif
};

static struct milspec *milspec;

static bool force;
module_param(force, bool, 0444);
MODULE_PARM_DESC(force, "Load on systems that are not Dell (default: 0)");

static unsigned int mode5_level;

static int mode5_level_set(const char *val, const struct kernel_param *kp)
{
	unsigned int *level = kp->arg;
	unsigned int old = READ_ONCE(*level);
	unsigned int new;
	int ret;

	ret = kstrtouint(val, 10, &new);
	if (ret)
		return ret;
	if (new > MILSPEC_MODE5_MAX) {
		pr_warn_ratelimited("mode5_level %u refused (allowed: 0-%d)\n",
				    new, MILSPEC_MODE5_MAX);
		return -EINVAL;
	}

	WRITE_ONCE(*level, new);
	pr_info("mode5_level set to %u (was %u)\n", new, old);
	return 0;
}

static const struct kernel_param_ops mode5_level_ops = {
	.set = mode5_level_set,
	.get = param_get_uint,
};

module_param_cb(mode5_level, &mode5_level_ops, &mode5_level, 0644);
__MODULE_PARM_TYPE(mode5_level, "uint");
MODULE_PARM_DESC(mode5_level,
		 "Mode 5 security level: 0 disabled, 1 standard, 2 enhanced, 3 paranoid");

static const struct dmi_system_id milspec_dmi_table[] = {
	{
		.ident = "Dell",
		.matches = {
			DMI_MATCH(DMI_SYS_VENDOR, "Dell Inc."),
		},
	},
	{
		.ident = "Dell (older firmware)",
		.matches = {
			DMI_MATCH(DMI_SYS_VENDOR, "Dell Computer Corporation"),
		},
	},
	{ }
};

static enum milspec_state milspec_get_state(const struct milspec *ms)
{
	if (!ms->selftest_ok)
		return MILSPEC_STATE_FAILED;
	if (atomic_read(&ms->errors))
		return MILSPEC_STATE_DEGRADED;
	return MILSPEC_STATE_OK;
}

static const char *milspec_state_name(enum milspec_state state)
{
	switch (state) {
	case MILSPEC_STATE_OK:
		return "ok";
	case MILSPEC_STATE_DEGRADED:
		return "degraded";
	case MILSPEC_STATE_FAILED:
	default:
		return "failed";
	}
}

/* Stable, machine-readable view: one "key: value" per line. */
static int milspec_status_show(struct seq_file *m, void *v)
{
	const struct milspec *ms = m->private;

	seq_printf(m, "version: %s\n", MILSPEC_VERSION);
	seq_printf(m, "state: %s\n", milspec_state_name(milspec_get_state(ms)));
	seq_printf(m, "selftest: %s\n", ms->selftest_ok ? "pass" : "fail");
	seq_printf(m, "mode5_level: %u\n", READ_ONCE(mode5_level));
	seq_printf(m, "errors: %u\n", (unsigned int)atomic_read(&ms->errors));
	seq_printf(m, "loaded_at: %llu\n", ms->loaded_at);
	seq_printf(m, "forced: %d\n", ms->forced);
#ifdef MILSPEC_FAULT
	seq_printf(m, "fault: %s\n", MILSPEC_FAULT);
#endif
	return 0;
}

/* Compatibility view in the spirit of the historic status text. */
static int milspec_summary_show(struct seq_file *m, void *v)
{
	const struct milspec *ms = m->private;
	unsigned int level = READ_ONCE(mode5_level);
	u64 secs = ms->loaded_at;
	u32 nsecs = do_div(secs, NSEC_PER_SEC);

	seq_puts(m, "Dell MIL-SPEC Status\n");
	seq_puts(m, "====================\n");
	seq_printf(m, "Version: %s\n", MILSPEC_VERSION);
	seq_printf(m, "State: %s\n", milspec_state_name(milspec_get_state(ms)));
	seq_printf(m, "Self-test: %s\n", ms->selftest_ok ? "pass" : "fail");
	seq_printf(m, "Mode 5: %s (level %u)\n", level ? "enabled" : "disabled", level);
	seq_printf(m, "Errors: %u\n", (unsigned int)atomic_read(&ms->errors));
	seq_printf(m, "Loaded: %llu.%09u s after boot\n", secs, nsecs);
	if (ms->forced)
		seq_puts(m, "Note: loaded with force=1 on a system that is not a Dell\n");
	return 0;
}

/*
 * Load-time self-test, run before /proc/milspec appears so that no reader
 * sees a half-made verdict.  Each failed check is counted in ->errors and
 * logged; the module still loads so that a supervisor can read the verdict.
 */
static void milspec_selftest(struct milspec *ms)
{
	unsigned int failed = 0;
	unsigned int level;
	size_t i;

	/* 1: the working buffer holds what was written to it. */
	for (i = 0; i < MILSPEC_SCRATCH_SIZE; i++)
		ms->scratch[i] = MILSPEC_PATTERN(i);
#ifdef MILSPEC_FAULT_SELFTEST
	ms->scratch[MILSPEC_SCRATCH_SIZE / 2] ^= 0xff;	/* corrupt one byte */
#endif
	for (i = 0; i < MILSPEC_SCRATCH_SIZE; i++) {
		if (ms->scratch[i] != MILSPEC_PATTERN(i)) {
			pr_err("self-test: memory pattern mismatch at byte %zu\n", i);
			failed++;
			break;
		}
	}

	/* 2: the boot-time clock runs forward from the load stamp. */
	if (!ms->loaded_at || ktime_get_boottime_ns() < ms->loaded_at) {
		pr_err("self-test: boot-time clock is not monotonic\n");
		failed++;
	}

	/* 3: the Mode 5 level is one this driver supports. */
	level = READ_ONCE(mode5_level);
	if (level > MILSPEC_MODE5_MAX) {
		pr_err("self-test: mode5_level %u out of range\n", level);
		failed++;
	}

	/* 4: the DMI gate still agrees with how we were loaded. */
	if (!ms->forced && !dmi_check_system(milspec_dmi_table)) {
		pr_err("self-test: DMI identity changed since the load check\n");
		failed++;
	}

	atomic_add(failed, &ms->errors);
	ms->selftest_ok = !failed;
	if (failed)
		pr_err("self-test: %u check(s) failed\n", failed);
}

#ifdef MILSPEC_FAULT
/*
 * Test builds only: each FAULT=<name> build misbehaves in one way that the
 * supervisor must notice.  Called at the end of init, once everything that
 * exit releases is in place.
 */

#ifdef MILSPEC_FAULT_BUSY
static atomic_t milspec_fault_ref_held = ATOMIC_INIT(0);

static int fault_release_set(const char *val, const struct kernel_param *kp)
{
	bool release;
	int ret;

	ret = kstrtobool(val, &release);
	if (ret)
		return ret;
	if (release && atomic_xchg(&milspec_fault_ref_held, 0)) {
		module_put(THIS_MODULE);
		pr_info("fault busy: module reference released\n");
	}
	return 0;
}

static int fault_release_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", !atomic_read(&milspec_fault_ref_held));
}

static const struct kernel_param_ops fault_release_ops = {
	.set = fault_release_set,
	.get = fault_release_get,
};

module_param_cb(fault_release, &fault_release_ops, NULL, 0644);
__MODULE_PARM_TYPE(fault_release, "bool");
MODULE_PARM_DESC(fault_release, "Fault busy: write 1 to drop the extra module reference");
#endif /* MILSPEC_FAULT_BUSY */

#ifdef MILSPEC_FAULT_WARNLATER
/*
 * Healthy at load and through any probation; WARNs from its own code each
 * time 1 is written to the fault_warn parameter, for faults seen after the
 * commit.
 */
static int fault_warn_set(const char *val, const struct kernel_param *kp)
{
	bool warn;
	int ret;

	ret = kstrtobool(val, &warn);
	if (ret)
		return ret;
	WARN(warn, "%s: fault warnlater: injected warning on request\n",
	     KBUILD_MODNAME);
	return 0;
}

static const struct kernel_param_ops fault_warn_ops = {
	.set = fault_warn_set,
};

module_param_cb(fault_warn, &fault_warn_ops, NULL, 0200);
__MODULE_PARM_TYPE(fault_warn, "bool");
MODULE_PARM_DESC(fault_warn, "Fault warnlater: write 1 to WARN now");
#endif /* MILSPEC_FAULT_WARNLATER */

#ifdef MILSPEC_FAULT_THREAD
/*
 * A kernel thread of our own rather than a work item: a kworker that dies in
 * an oops is never taken off its pool's count of running workers, so every
 * later per-CPU work item on that CPU would stall (umount and power-off wait
 * for some), which is not the failure under test.
 */
static int milspec_fault_threadfn(void *data)
{
	long timeout = msecs_to_jiffies(MILSPEC_FAULT_DELAY_MS);
#ifdef MILSPEC_FAULT_OOPS
	struct milspec *ms = data;
#endif

	while (timeout && !kthread_should_stop())
		timeout = schedule_timeout_interruptible(timeout);
	if (kthread_should_stop())
		return 0;	/* unloaded before the fault fired */

#ifdef MILSPEC_FAULT_OOPS
	/*
	 * The thread dies in the oops and exit could never stop it: keep the
	 * module pinned (unload fails with EAGAIN) instead.
	 */
	__module_get(THIS_MODULE);
	pr_err("fault oops: writing through a NULL pointer\n");
	WRITE_ONCE(*ms->fault_null, 0xdead);
#else
	panic("%s: fault panic: injected panic %d ms after load\n",
	      KBUILD_MODNAME, MILSPEC_FAULT_DELAY_MS);
#endif
	return 0;
}
#endif /* MILSPEC_FAULT_THREAD */

static int milspec_fault_arm(struct milspec *ms)
{
#if defined(MILSPEC_FAULT_WARN)
	WARN(1, "%s: fault warn: injected warning at init\n", KBUILD_MODNAME);
#elif defined(MILSPEC_FAULT_BUSY)
	if (!try_module_get(THIS_MODULE))
		return -ENODEV;
	atomic_set(&milspec_fault_ref_held, 1);
	pr_info("fault busy: holding a module reference until fault_release=1\n");
#elif defined(MILSPEC_FAULT_DEGRADED)
	atomic_inc(&ms->errors);
	pr_warn("fault degraded: counted one runtime error\n");
#elif defined(MILSPEC_FAULT_THREAD)
	ms->fault_thread = kthread_run(milspec_fault_threadfn, ms,
				       "milspec_fault");
	if (IS_ERR(ms->fault_thread))
		return PTR_ERR(ms->fault_thread);
	pr_info("fault %s: armed, fires in %d ms\n", MILSPEC_FAULT,
		MILSPEC_FAULT_DELAY_MS);
#endif
	return 0;
}
#endif /* MILSPEC_FAULT */

static int __init milspec_init(void)
{
	bool is_dell = dmi_check_system(milspec_dmi_table);
	struct milspec *ms;
	int ret;

	if (!is_dell) {
		const char *vendor = dmi_get_system_info(DMI_SYS_VENDOR);

		if (!force) {
			pr_err("not a Dell system (sys_vendor \"%s\"); refusing to load (force=1 overrides)\n",
			       vendor ? vendor : "unknown");
			return -ENODEV;
		}
		pr_warn("not a Dell system (sys_vendor \"%s\"); loading anyway (force=1)\n",
			vendor ? vendor : "unknown");
	}

#ifdef MILSPEC_FAULT_SLOWINIT
	pr_info("fault slowinit: sleeping %d ms in init\n", MILSPEC_FAULT_SLOWINIT_MS);
	msleep(MILSPEC_FAULT_SLOWINIT_MS);
#endif

	ms = kzalloc(sizeof(*ms), GFP_KERNEL);
	if (!ms)
		return -ENOMEM;

	ms->scratch = kmalloc(MILSPEC_SCRATCH_SIZE, GFP_KERNEL);
	if (!ms->scratch) {
		ret = -ENOMEM;
		goto err_free_ms;
	}

	atomic_set(&ms->errors, 0);
	ms->forced = !is_dell;
	ms->loaded_at = ktime_get_boottime_ns();

	milspec_selftest(ms);

	ms->dir = proc_mkdir(MILSPEC_PROC_DIR, NULL);
	if (!ms->dir) {
		pr_err("cannot create /proc/%s\n", MILSPEC_PROC_DIR);
		ret = -ENOMEM;
		goto err_free_scratch;
	}

	ms->status = proc_create_single_data("status", 0444, ms->dir,
					     milspec_status_show, ms);
	if (!ms->status) {
		ret = -ENOMEM;
		goto err_remove_dir;
	}

	ms->summary = proc_create_single_data("summary", 0444, ms->dir,
					      milspec_summary_show, ms);
	if (!ms->summary) {
		ret = -ENOMEM;
		goto err_remove_status;
	}

#ifdef MILSPEC_FAULT
	ret = milspec_fault_arm(ms);
	if (ret)
		goto err_remove_summary;
#endif

	milspec = ms;
	pr_info("version %s loaded: state %s, selftest %s, mode5_level %u\n",
		MILSPEC_VERSION, milspec_state_name(milspec_get_state(ms)),
		ms->selftest_ok ? "pass" : "fail", READ_ONCE(mode5_level));
	return 0;

#ifdef MILSPEC_FAULT
err_remove_summary:
	remove_proc_entry("summary", ms->dir);
#endif
err_remove_status:
	remove_proc_entry("status", ms->dir);
err_remove_dir:
	remove_proc_entry(MILSPEC_PROC_DIR, NULL);
err_free_scratch:
	kfree(ms->scratch);
err_free_ms:
	kfree(ms);
	return ret;
}

static void __exit milspec_exit(void)
{
	struct milspec *ms = milspec;

#ifdef MILSPEC_FAULT_THREAD
	kthread_stop(ms->fault_thread);
#endif
	/* remove_proc_entry() waits for readers still inside a show(). */
	remove_proc_entry("summary", ms->dir);
	remove_proc_entry("status", ms->dir);
	remove_proc_entry(MILSPEC_PROC_DIR, NULL);
	kfree(ms->scratch);
	kfree(ms);
	milspec = NULL;
	pr_info("version %s unloaded\n", MILSPEC_VERSION);
}

module_init(milspec_init);
module_exit(milspec_exit);

MODULE_DESCRIPTION("Dell MIL-SPEC platform status driver");
MODULE_LICENSE("GPL");
MODULE_VERSION(MILSPEC_VERSION);
