/* vmstack-agent --init: PID 1 setup (pid1.c). Returns only in the child that serves the agent. */
#ifndef VMSTACK_PID1_H
#define VMSTACK_PID1_H
void pid1_setup(void);
#endif
