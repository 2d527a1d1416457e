// SPDX-License-Identifier: GPL-2.0
/*
 * milspec-neighbour: a test module that is not dell_milspec.  Writing 1 to
 * its "warn" parameter makes it WARN, so the VM tests can raise the
 * kernel's warn_count from another driver while dell_milspec is on
 * probation.  Never shipped.
 */

#include <linux/bug.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/moduleparam.h>

static noinline int neighbour_warn_set(const char *val,
				       const struct kernel_param *kp)
{
	bool fire;
	int ret;

	ret = kstrtobool(val, &fire);
	if (ret)
		return ret;
	WARN(fire, "%s: injected warning on request\n", KBUILD_MODNAME);
	return 0;
}

static const struct kernel_param_ops neighbour_warn_ops = {
	.set = neighbour_warn_set,
	.get = NULL,
};

module_param_cb(warn, &neighbour_warn_ops, NULL, 0200);
__MODULE_PARM_TYPE(warn, "bool");
MODULE_PARM_DESC(warn, "Write 1 to make this module WARN");

static int __init neighbour_init(void)
{
	pr_info("loaded\n");
	return 0;
}

static void __exit neighbour_exit(void)
{
}

module_init(neighbour_init);
module_exit(neighbour_exit);

MODULE_DESCRIPTION("milspec test module: WARNs on request, from another driver");
MODULE_LICENSE("GPL");
