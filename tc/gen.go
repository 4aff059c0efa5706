package tc

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type handoff_counter bpf handoff.c -- -I../bpf/include -I. -I/usr/include/x86_64-linux-gnu
