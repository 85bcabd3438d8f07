/* --as-pid2: a minimal PID 1 for payloads that are not an init. It reaps every orphan, hands
 * the signals an init receives on to the payload (PID 2) and exits with the payload's status. */
#define _GNU_SOURCE
#include "nsexec.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void noop_handler(int sig)
{
	(void)sig;
}

void stub_init_run(pid_t payload)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	/* sigwaitinfo() unblocks the waited-for set while it sleeps, so /proc/1/status would show
	 * them neither blocked nor caught and the supervisor would hold a stop request forever.
	 * A no-op handler marks them caught; being blocked, they still arrive through sigwaitinfo. */
	struct sigaction sa = { .sa_handler = noop_handler };
	sigfillset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &sa, NULL);
	prctl(PR_SET_NAME, "(sd-stubinit)", 0, 0, 0);
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(&all, &si);
		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			kill(payload, sig);
			continue;
		}
		for (;;) {
			int status;
			pid_t p = waitpid(-1, &status, WNOHANG);
			if (p <= 0)
				break;
			if (p == payload) {
				if (WIFEXITED(status))
					_exit(WEXITSTATUS(status));
				_exit(128 + WTERMSIG(status));
			}
		}
	}
}
