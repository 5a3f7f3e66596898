module github.com/wsplice/wsplice

go 1.26.0

require (
	github.com/gobwas/httphead v0.1.0
	github.com/gobwas/ws v1.5.0
	github.com/gorilla/websocket v1.5.3
	github.com/mailru/easygo v0.0.0-20190618140210-3c14a0dc985f
	golang.org/x/sys v0.50.0
)
