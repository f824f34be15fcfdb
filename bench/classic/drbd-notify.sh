#!/bin/sh
# The classic stack's notify script (bench/classic/README.md): keepalived runs it with the new
# state. It promotes whatever copy this node has: keepalived cannot know whether it is stale.
# The log lines are the benchmark's phase marks; they change nothing the recipe does.
RES=r0
MNT=
[ -r /etc/keepalived/drbd-notify.conf ] && . /etc/keepalived/drbd-notify.conf
log() { logger -t drbd-notify "$*"; }
# keepalived runs notify scripts concurrently: at its start the BACKUP (init) script, still
# stopping nfs-server, demoted DRBD right after the MASTER script had promoted it, and the
# mount failed. One at a time, in the order keepalived started them.
exec 9>/run/drbd-notify.lock
flock 9

case "$1" in
master)
    # DRBD refuses while it still sees the old Primary; the recipes retry for a while.
    i=0
    until drbdadm primary "$RES"; do
        i=$((i + 1))
        log "promote refused ($i)"
        [ "$i" -ge 30 ] && { log "promote failed"; exit 1; }
        sleep 1
    done
    log "promoted $RES"
    if [ -n "$MNT" ]; then
        mount /dev/drbd0 "$MNT" && log "mounted $MNT" &&
            mount --bind "$MNT/nfs" /var/lib/nfs &&
            systemctl restart nfs-server && log "serving $MNT"
    fi
    ;;
backup | fault | stop)
    if [ -n "$MNT" ]; then
        systemctl stop nfs-server
        umount /var/lib/nfs
        umount "$MNT"
    fi
    drbdadm secondary "$RES" && log "demoted $RES"
    ;;
esac
