// Function-entry coverage by breakpoints, for `make text-order` (scripts/text-order.sh).
// Every function start in FUNCS (ELF vaddrs, hex, one a line) gets an int3 in each traced
// process running BINPATH; a first hit is appended to OUT (the vaddr), the byte restored and
// the process resumed, so each function costs one trap. Follows threads and forks (a fork's
// text is a copy, int3s included); at an exec of BINPATH it plants them anew, except in crt's
// init helpers (argv __crt_init), which it leaves, as it leaves any other program.
// A profiling tool only: a process left with int3s when the tracer goes dies at the next one.
//
// usage: trace OUT FUNCS BINPATH -p PID           attach to a running process
//        trace OUT FUNCS BINPATH -- CMD ARGS...   as a shim wrapper: exits with CMD's status
//                                                 while it goes on tracing what CMD started
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <errno.h>
#include <dirent.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <sys/user.h>
#include <unistd.h>
#include <fcntl.h>

static unsigned long *funcs; static unsigned char *orig, *hit; static size_t nf;
static volatile sig_atomic_t stop;
static void on_sig(int s){(void)s; stop=1;}
static int cmp(const void*a,const void*b){unsigned long x=*(unsigned long*)a,y=*(unsigned long*)b;return x<y?-1:x>y;}
static long find(unsigned long v){size_t lo=0,hi=nf;while(lo<hi){size_t m=(lo+hi)/2;if(funcs[m]<v)lo=m+1;else hi=m;}return (lo<nf&&funcs[lo]==v)?(long)lo:-1;}
static unsigned long base_of(pid_t pid,const char*bin){char p[64];snprintf(p,64,"/proc/%d/maps",pid);FILE*f=fopen(p,"r");char l[4096];unsigned long b=0;
  while(f&&fgets(l,sizeof l,f)){unsigned long s,e,off;char perm[8];char path[3000]="";if(sscanf(l,"%lx-%lx %7s %lx %*s %*s %2999s",&s,&e,perm,&off,path)>=4&&strstr(path,bin)&&off==0){b=s;break;}}
  if(f) fclose(f);
  return b;}
static int poke_all(pid_t pid,unsigned long base,int save){
  for(size_t i=0;i<nf;i++){ if(hit[i]) continue; unsigned long a=base+funcs[i]; errno=0; long w=ptrace(PTRACE_PEEKTEXT,pid,a,0); if(errno) return -1;
    if(save) orig[i]=w&0xff;
    long nw=(w&~0xffL)|0xcc; if(ptrace(PTRACE_POKETEXT,pid,a,nw)) return -1; }
  return 0;}
static int is_helper(pid_t t){char p[64];snprintf(p,64,"/proc/%d/cmdline",t);FILE*f=fopen(p,"r");char b[4096];size_t n=f?fread(b,1,sizeof b-1,f):0;if(f)fclose(f);
  // the init helpers and the zygote that forks them (its forks inherit an untraced image)
  for(size_t i=0;i+10<=n;i++) if(!memcmp(b+i,"__crt_init",10)||(i+12<=n&&!memcmp(b+i,"__crt_zygote",12))) return 1;
  return 0;}
int main(int argc,char**argv){
  if(argc<6||(strcmp(argv[4],"-p")&&strcmp(argv[4],"--"))){fprintf(stderr,"usage: trace OUT FUNCS BINPATH -p PID | -- CMD...\n");return 2;}
  int launch=!strcmp(argv[4],"--");
  FILE*ff=fopen(argv[2],"r"); size_t cap=1<<16; funcs=malloc(cap*sizeof *funcs); unsigned long v;
  while(fscanf(ff,"%lx",&v)==1){if(nf==cap){cap*=2;funcs=realloc(funcs,cap*sizeof *funcs);} funcs[nf++]=v;}
  qsort(funcs,nf,sizeof *funcs,cmp); size_t k=0; for(size_t i=0;i<nf;i++) if(!k||funcs[i]!=funcs[k-1]) funcs[k++]=funcs[i]; nf=k;
  orig=calloc(nf,1); hit=calloc(nf,1);
  const char*bin=argv[3];
  long opts=PTRACE_O_TRACECLONE|PTRACE_O_TRACEFORK|PTRACE_O_TRACEVFORK|PTRACE_O_TRACEEXEC;
  FILE*out;
  pid_t first=0; int report=-1;
  if(launch){
    int pp[2]; if(pipe(pp)) return 1;
    pid_t tr=fork(); if(tr<0) return 1;
    if(tr>0){ close(pp[1]); int code=1; if(read(pp[0],&code,sizeof code)!=sizeof code) code=1; return code; }
    close(pp[0]); report=pp[1]; setsid();
    pid_t c=fork();
    if(c==0){ close(report); ptrace(PTRACE_TRACEME,0,0,0); raise(SIGSTOP); execv(argv[5],argv+5); _exit(127); }
    int st; waitpid(c,&st,0); ptrace(PTRACE_SETOPTIONS,c,0,opts); ptrace(PTRACE_CONT,c,0,0);
    int devnull=open("/dev/null",2); dup2(devnull,0); dup2(devnull,1); dup2(devnull,2);
    first=c; out=fopen(argv[1],"w");
    goto loop;
  }
  pid_t pid=atoi(argv[5]);
  unsigned long base=base_of(pid,bin); if(!base){fprintf(stderr,"no mapping of %s in %d\n",bin,pid);return 1;}
  signal(SIGINT,on_sig); signal(SIGTERM,on_sig);
  // seize every thread, stop them all, plant breakpoints once (shared address space)
  char p[64]; snprintf(p,64,"/proc/%d/task",pid); DIR*d=opendir(p); struct dirent*de; int nt=0;
  while((de=readdir(d))){int t=atoi(de->d_name); if(t<=0) continue; if(ptrace(PTRACE_SEIZE,t,0,opts)){perror("seize");return 1;} ptrace(PTRACE_INTERRUPT,t,0,0); nt++;}
  closedir(d);
  for(int i=0;i<nt;i++){int st; waitpid(-1,&st,__WALL);} // each interrupt stop
  if(poke_all(pid,base,1)){perror("poke");return 1;}
  fprintf(stderr,"trace: %zu breakpoints in %d (%d threads)\n",nf,pid,nt);
  snprintf(p,64,"/proc/%d/task",pid); d=opendir(p); while((de=readdir(d))){int t=atoi(de->d_name); if(t>0) ptrace(PTRACE_CONT,t,0,0);} closedir(d);
  out=fopen(argv[1],"w");
loop:;
  size_t nhit=0;
  // per process (tgid) load base: a process' threads and forks share it
  static pid_t bpid[4096]; static unsigned long bval[4096]; int nb=0;
  if(!launch){ bpid[nb]=pid; bval[nb++]=base; }
  while(!stop){
    int st; pid_t t=waitpid(-1,&st,__WALL); if(t<0){ if(errno==EINTR) continue; break; }
    if(WIFEXITED(st)||WIFSIGNALED(st)){ if(t==first&&report>=0){ int code=WIFEXITED(st)?WEXITSTATUS(st):128+WTERMSIG(st); if(write(report,&code,sizeof code)<0){} close(report); report=-1; } continue; }
    if(!WIFSTOPPED(st)) continue;
    int sig=WSTOPSIG(st), ev=(unsigned)st>>16;
    if(ev==PTRACE_EVENT_EXEC){
      char ex[256]; char lp[64]; snprintf(lp,64,"/proc/%d/exe",t); ssize_t n=readlink(lp,ex,sizeof ex-1); ex[n>0?n:0]=0;
      if(!strstr(ex,bin)||is_helper(t)){ ptrace(PTRACE_DETACH,t,0,0); continue; }
      unsigned long b=base_of(t,bin);
      if(b && nb<4096 && !poke_all(t,b,1)){ bpid[nb]=t; bval[nb++]=b; }
      ptrace(PTRACE_CONT,t,0,0); continue; }
    if(ev==PTRACE_EVENT_FORK||ev==PTRACE_EVENT_VFORK){ unsigned long np=0; ptrace(PTRACE_GETEVENTMSG,t,0,&np);
      char sp[64]; snprintf(sp,64,"/proc/%d/status",t); FILE*sf=fopen(sp,"r"); char l[256]; pid_t tg=t; while(sf&&fgets(l,sizeof l,sf)) if(!strncmp(l,"Tgid:",5)){tg=atoi(l+5);break;} if(sf)fclose(sf);
      for(int j=nb-1;j>=0;j--) if(bpid[j]==tg){ if(nb<4096){bpid[nb]=np; bval[nb++]=bval[j];} break; }
      ptrace(PTRACE_CONT,t,0,0); continue; }
    if(ev){ ptrace(PTRACE_CONT,t,0,0); continue; } // clone/fork events: the new one arrives stopped too
    if(sig==SIGSTOP){ ptrace(PTRACE_CONT,t,0,0); continue; } // new tracee's first stop
    if(sig==SIGTRAP){ struct user_regs_struct r; ptrace(PTRACE_GETREGS,t,0,&r);
      // which process' base? threads share the leader's; forks share the same layout
      unsigned long b=base_of(t,bin);
      unsigned long a=r.rip-1; long i=b?find(a-b):-1;
      if(i>=0){ errno=0; long w=ptrace(PTRACE_PEEKTEXT,t,a,0); if(!errno && (w&0xff)==0xcc) ptrace(PTRACE_POKETEXT,t,a,(w&~0xffL)|orig[i]);
        r.rip=a; ptrace(PTRACE_SETREGS,t,0,&r);
        if(!hit[i]){ hit[i]=1; nhit++; fprintf(out,"%lx\n",funcs[i]); fflush(out); }
        ptrace(PTRACE_CONT,t,0,0); continue; }
      ptrace(PTRACE_CONT,t,0,SIGTRAP); continue; }
    ptrace(PTRACE_CONT,t,0,sig);
  }
  fclose(out); fprintf(stderr,"trace: %zu functions hit\n",nhit); return 0;
}
