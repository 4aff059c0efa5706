package xdp

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type flow_key -type flow -type service_key -type service -type backend -type counter -type flow_direction -type flow_state -type splice_state -type slowpath_reason -type http_method -type service_flags -type http_framing -type route_key -type route -type pool bpf xdp.c -- -I../bpf/include -I. -I/usr/include/x86_64-linux-gnu
