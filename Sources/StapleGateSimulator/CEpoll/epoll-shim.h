// Linux epoll, which Swift's Glibc module does not include: the load generator's workers
// each wait on one epoll set holding all their libmosquitto clients' sockets.
#include <sys/epoll.h>
