package xdp

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type flow_key -type flow -type service_key -type service -type backend -type counter -type flow_direction -type flow_state bpf xdp.c -- -I../bpf/include -I/usr/include/x86_64-linux-gnu
